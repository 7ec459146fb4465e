"""The profiling grid: request classes x TP x clock x load, and the request streams of a point.

Lengths of a class are drawn log-uniformly within its bins (config ``classes``); the open-ended
L bins are capped at :data:`INPUT_CAP_TOKENS` = 8192 input and :data:`OUTPUT_CAP_TOKENS` = 1000
output tokens, and S bins start at 16 input / 8 output tokens. Or, given :class:`LengthPools` from
a trace of the workload (``dynamo profile --lengths-from``), each request is a (input, output) pair
drawn from the trace's requests of that class: a profile of the lengths the fleet serves rather
than of the bins (a class with fewer than :data:`MIN_POOL` requests in the trace keeps the
log-uniform draw). Arrivals are Poisson at the point's offered rate. Streams are seeded by (seed,
class, tp, load level) but not by clock, so every clock of a (class, tp, load) sees the same
requests (common random numbers: clock comparisons are not blurred by sampling noise).

Load levels are per (class, tp): the job finds where the class breaks its SLO at the top clock
(:func:`find_break_rps`) and spaces :data:`LOAD_FRACTIONS` of that rate, the last one just past it.
The class SLOs come from :func:`class_slos`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from dynamo_pipeline.config import Settings

INPUT_CAP_TOKENS = 8192
OUTPUT_CAP_TOKENS = 1000
INPUT_FLOOR_TOKENS = 16
OUTPUT_FLOOR_TOKENS = 8
#: load levels as fractions of the rate at which the class breaks its SLO at the top clock
LOAD_FRACTIONS = (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 1.1)


@dataclass(frozen=True)
class ClassBins:
    """Token ranges [lo, hi) of one class's input and output."""

    name: str
    input_lo: int
    input_hi: int
    output_lo: int
    output_hi: int

    @property
    def input_median(self) -> float:
        return float(np.sqrt(self.input_lo * self.input_hi))  # log-uniform median


def class_bins(settings: Settings) -> dict[str, ClassBins]:
    """Token ranges of the nine classes from the configured bins (capped as documented above)."""
    i1, i2 = settings.classes.input_bins_tokens
    o1, o2 = settings.classes.output_bins_tokens
    ins = {"S": (INPUT_FLOOR_TOKENS, i1), "M": (i1, i2), "L": (i2, max(INPUT_CAP_TOKENS, i2 + 1))}
    outs = {"S": (OUTPUT_FLOOR_TOKENS, o1), "M": (o1, o2), "L": (o2, max(OUTPUT_CAP_TOKENS, o2 + 1))}
    return {n: ClassBins(n, *ins[n[0]], *outs[n[1]]) for n in settings.classes.names()}


#: A class needs this many requests in the trace for its lengths to be drawn from them.
MIN_POOL = 20


@dataclass(frozen=True)
class LengthPools:
    """(input tokens, output tokens) of a workload's requests per class, and where they came from."""

    source: str
    pairs: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def from_trace(cls, trace, settings: Settings, source: str) -> LengthPools:
        """Pools from a trace frame (``input_tokens``, ``output_tokens``, true class index ``cls``)."""
        names = settings.classes.names()
        c = trace["cls"].to_numpy()
        inp, out = trace["input_tokens"].to_numpy(np.int64), trace["output_tokens"].to_numpy(np.int64)
        return cls(source, {n: (inp[c == i], out[c == i]) for i, n in enumerate(names) if (c == i).sum() >= MIN_POOL})

    def fingerprint(self) -> str:
        """Names the pools in a profile run's spec (a resumed run must draw from the same ones)."""
        h = hashlib.sha256()
        for name in sorted(self.pairs):
            h.update(name.encode())
            for a in self.pairs[name]:
                h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        return f"{self.source}:{h.hexdigest()[:12]}"

    def counts(self) -> dict[str, int]:
        return {k: int(v[0].size) for k, v in self.pairs.items()}


def draw_requests(bins: ClassBins, load_rps: float, n: int, rng: np.random.Generator,
                  lengths: LengthPools | None = None):
    """``n`` Poisson arrivals at ``load_rps`` (s, from 0) with log-uniform lengths in the bins, or
    (input, output) pairs drawn with replacement from ``lengths``' pool of the class when it has one."""
    arrival_s = np.cumsum(rng.exponential(1.0 / load_rps, n))
    u = rng.uniform(size=(2, n))
    pool = lengths.pairs.get(bins.name) if lengths is not None else None
    if pool is not None:
        k = rng.integers(0, pool[0].size, n)
        return arrival_s, pool[0][k].copy(), pool[1][k].copy()
    inp = np.exp(np.log(bins.input_lo) + u[0] * (np.log(bins.input_hi) - np.log(bins.input_lo)))
    out = np.exp(np.log(bins.output_lo) + u[1] * (np.log(bins.output_hi) - np.log(bins.output_lo)))
    return arrival_s, np.floor(inp).astype(np.int64), np.floor(out).astype(np.int64)


def stream_size(load_rps: float, n_requests: int, min_duration_s: float) -> int:
    """Requests in a grid point's stream: ``n_requests``, or more so that the arrivals span at least
    ``min_duration_s`` — a rate just beyond what the instance sustains shows its growing queue only
    over time (600 requests at 90 rps last 7 s), and the planner holds a load for a whole window."""
    return max(int(n_requests), int(np.ceil(load_rps * min_duration_s)))


def point_rng(seed: int, class_name: str, tp: int, load_index: int) -> np.random.Generator:
    """The request-stream generator of a grid point (independent of the clock, see above)."""
    code = sum(ord(c) * 31**i for i, c in enumerate(class_name))
    return np.random.default_rng([seed, code, tp, load_index])


def class_slos(settings: Settings, bare_prefill_s) -> dict[str, tuple[float, float]]:
    """(TTFT P99 s, TBT P99 s) per class. TTFT: the configured SLO, or for long-input classes
    ``long_input_ttft_factor`` x the bare prefill time, on TP8 at the top clock, of the class's
    median prompt when that is larger (DESIGN §1). ``bare_prefill_s(input_tokens)`` gives that time."""
    out = {}
    for name, b in class_bins(settings).items():
        ttft, tbt = settings.slo.for_class(name)
        if name[0] == "L" and name not in settings.slo.per_class:
            ttft = max(ttft, settings.slo.long_input_ttft_factor * bare_prefill_s(b.input_median))
        out[name] = (ttft, tbt)
    return out


def meets_slo(ttft_p99_s: float, tbt_p99_s: float, slo: tuple[float, float]) -> bool:
    return bool(ttft_p99_s <= slo[0] and (np.isnan(tbt_p99_s) or tbt_p99_s <= slo[1]))


def find_break_rps(ok, start_rps: float, max_rps: float = 1e4, iters: int = 6) -> float:
    """The lowest rate at which ``ok(rate)`` turns false, by doubling from ``start_rps`` then
    bisecting geometrically ``iters`` times (``ok`` must be true at low rates)."""
    lo = start_rps
    while not ok(lo):
        lo /= 4
        if lo < 1e-4:
            return start_rps  # never ok: the grid still spans low loads up to start_rps
    hi = lo * 2
    while ok(hi) and hi < max_rps:
        lo, hi = hi, hi * 2
    for _ in range(iters):
        mid = float(np.sqrt(lo * hi))
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return hi
