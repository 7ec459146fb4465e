"""Synthetic request streams from per-class window loads (ServeGen's or any store's).

:func:`generate_requests` expands a window-loads frame (columns of
:func:`dynamo_pipeline.ingest.windows.window_loads`, optionally ``cv``) into individual requests:
in each (model, class, window) arrivals follow a renewal process with gamma inter-arrival times
of the window's coefficient of variation (shape 1/cv², so cv = 1 is Poisson, cv > 1 bursty) and
mean 1/rate; input and output lengths are drawn log-normally around the class's mean tokens in
that window (when the token sums are given) and kept inside the class's bins, so every generated
request classifies back into its class. The result has the columns the simulator and
ingestion take: arrived_at_us, input_tokens, output_tokens, model, tenant, request_id.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynamo_pipeline.config import BIN_LETTERS, ClassesConfig

REQUEST_COLUMNS = ["arrived_at_us", "input_tokens", "output_tokens", "model", "tenant", "request_id"]
#: the long bins have no upper edge: lengths are drawn up to this many times the lower edge
LONG_BIN_SPAN = 4.0
_LENGTH_SIGMA = 0.6


def _bin_bounds(letter: str, bins: tuple[int, int]) -> tuple[float, float]:
    i = BIN_LETTERS.index(letter)
    edges = [1.0, float(bins[0]), float(bins[1]), float(bins[1]) * LONG_BIN_SPAN]
    return edges[i], edges[i + 1]


def _lengths(rng: np.random.Generator, n: int, mean: float | None, lo: float, hi: float) -> np.ndarray:
    """n integer lengths in [lo, hi): log-normal around ``mean`` (or the bin's geometric middle)."""
    centre = mean if mean and lo <= mean < hi else np.sqrt(lo * hi)
    x = rng.lognormal(np.log(centre) - _LENGTH_SIGMA**2 / 2, _LENGTH_SIGMA, n)
    return np.clip(np.floor(x), lo, np.ceil(hi) - 1).astype(np.int64)


def _arrivals(rng: np.random.Generator, rate_rps: float, cv: float, start_s: float, window_s: float) -> np.ndarray:
    """Arrival times (s) in [start, start + window) of a gamma renewal process, started in the window
    at a random phase (the first gap is drawn from the same law, scaled by a uniform)."""
    if rate_rps <= 0:
        return np.empty(0)
    shape = 1.0 / max(cv, 1e-3) ** 2
    scale = 1.0 / (rate_rps * shape)
    expect = rate_rps * window_s
    n = int(expect + 6 * np.sqrt(expect * max(cv, 1.0) ** 2) + 10)
    t = np.empty(0)
    while True:
        gaps = rng.gamma(shape, scale, n)
        gaps[0] *= rng.random() if t.size == 0 else 1.0
        more = (t[-1] if t.size else 0.0) + np.cumsum(gaps)
        t = np.concatenate([t, more])
        if t[-1] >= window_s:
            return start_s + t[t < window_s]


def generate_requests(loads: pd.DataFrame, classes: ClassesConfig | None = None, seed: int = 0,
                      rate_scale: float = 1.0, since_s: int | None = None, until_s: int | None = None,
                      cv: float = 1.0, tenant: str | None = None) -> pd.DataFrame:
    """Expand window loads into a request stream sorted by arrival time.

    ``rate_scale`` multiplies every rate (ServeGen's m-small peaks at 3,900 requests/s: scale down for
    a replay); ``since_s``/``until_s`` keep windows starting in that span; ``cv`` is used where the
    frame has no ``cv`` column; ``tenant`` defaults to the model name with a ``synthetic-`` prefix.
    """
    classes = classes or ClassesConfig()
    df = loads
    if since_s is not None:
        df = df[df.window_start_s >= since_s]
    if until_s is not None:
        df = df[df.window_start_s < until_s]
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {c: [] for c in REQUEST_COLUMNS[:4]}
    has_cv = "cv" in df.columns
    for row in df.itertuples(index=False):
        rate = float(row.rate_rps) * rate_scale
        t = _arrivals(rng, rate, float(row.cv) if has_cv else cv, float(row.window_start_s), float(row.window_s))
        n = t.size
        if n == 0:
            continue
        i_lo, i_hi = _bin_bounds(row.class_name[0], classes.input_bins_tokens)
        o_lo, o_hi = _bin_bounds(row.class_name[1], classes.output_bins_tokens)
        arr = max(float(row.arrivals), 1.0)
        cols["arrived_at_us"].append(np.floor(t * 1e6).astype(np.int64))
        cols["input_tokens"].append(_lengths(rng, n, row.input_tokens_sum / arr if row.arrivals else None, i_lo, i_hi))
        cols["output_tokens"].append(_lengths(rng, n, row.output_tokens_sum / arr if row.arrivals else None, o_lo, o_hi))
        cols["model"].append(np.full(n, row.model, dtype=object))
    if not cols["arrived_at_us"]:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c.endswith(("_us", "tokens")) else object)
                             for c in REQUEST_COLUMNS})
    out = pd.DataFrame({c: np.concatenate(v) for c, v in cols.items()})
    out = out.sort_values("arrived_at_us", kind="stable").reset_index(drop=True)
    out["tenant"] = tenant if tenant is not None else "synthetic-" + out.model.astype(str)
    out["request_id"] = [f"syn-{seed}-{i}" for i in range(len(out))]
    return out[REQUEST_COLUMNS]
