"""Profiling jobs: run the grid class x TP x clock x load on a runner and write the profile.

A *runner* measures one grid point: it serves a Poisson stream of requests of one class on one
instance of ``tp`` GPUs at one SM clock and returns the metrics of the CSV contract. Two runners:
:class:`SimRunner` (the simulated server, ``source=sim``) and
:class:`dynamo_pipeline.profiling.http_runner.HttpRunner` (a real serving engine's
OpenAI-compatible endpoint, clocks locked and energy read through an NVML backend,
``source=nvml``). :func:`run_profile` finds each (class, tp)'s load levels, walks the grid with a
tqdm bar, appends every finished point to the resumable partial CSV (and the store), and renames
it to ``profiles/<gpu>/<model>.csv`` at the end. Run again after an interruption, it skips the
points already written.
"""

from __future__ import annotations

import hashlib
import json
import platform
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from tqdm import tqdm

from dynamo_pipeline.config import Settings
from dynamo_pipeline.hardware.cards import fitting_tp, gpu_card, model_card
from dynamo_pipeline.hardware.sim import EngineParams, SimServer
from dynamo_pipeline.profiling import grid as G
from dynamo_pipeline.profiling.writer import PROFILE_COLUMNS, PartialProfile, point_key, profile_path, write_rows
from dynamo_pipeline.store import Store


#: Shortest span of arrivals in a grid point (s): one pool-level window, the time a plan holds a load.
DEFAULT_MIN_DURATION_S = 300.0


class Runner(Protocol):
    source: str

    def versions(self) -> str: ...

    def bare_prefill_s(self, input_tokens: float) -> float:
        """Prefill time of one prompt alone on TP8 at the top clock, s (for long-input SLOs)."""

    def measure(self, tp: int, clock_mhz: int, arrival_s, input_tokens, output_tokens) -> dict:
        """Serve the stream and return throughput_rps, ttft_p50_s, ttft_p99_s, tbt_p50_s,
        tbt_p99_s, power_w (instance, all GPUs) and energy_per_request_j."""


def summarise(n: int, ttft_s, tbt_s, energy_j: float, span_s: float) -> dict:
    """The contract's metrics from per-request latencies and the instance's energy over the span."""
    tbt = np.asarray(tbt_s, dtype=float)
    tbt = tbt[~np.isnan(tbt)]
    return {
        "throughput_rps": n / span_s,
        "ttft_p50_s": float(np.percentile(ttft_s, 50)),
        "ttft_p99_s": float(np.percentile(ttft_s, 99)),
        "tbt_p50_s": float(np.percentile(tbt, 50)) if len(tbt) else float("nan"),
        "tbt_p99_s": float(np.percentile(tbt, 99)) if len(tbt) else float("nan"),
        "power_w": energy_j / span_s,
        "energy_per_request_j": energy_j / n,
    }


def package_versions(*names: str) -> str:
    from dynamo_pipeline import __version__

    parts = [f"python={platform.python_version()}", f"dynamo-pipeline={__version__}"]
    for name in ("numpy", *names):
        try:
            parts.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name}=unknown")
    return " ".join(parts)


class SimRunner:
    """Grid points on the simulated server (:class:`SimServer`)."""

    source = "sim"

    def __init__(self, model: str, gpu: str, params: EngineParams | None = None):
        self.server = SimServer(model, gpu, params)

    def versions(self) -> str:
        return package_versions() + " engine=SimServer"

    def bare_prefill_s(self, input_tokens: float) -> float:
        return float(self.server.prefill_s([input_tokens], 8, self.server.gpu.clock_max_mhz)[0])

    def measure(self, tp, clock_mhz, arrival_s, input_tokens, output_tokens) -> dict:
        r = self.server.serve(arrival_s, input_tokens, output_tokens, clock_mhz, tp)
        return summarise(len(arrival_s), r.ttft_s, r.tbt_s, r.energy_j, r.span_s)


@dataclass
class ProfileJobResult:
    path: Path
    run_id: str
    points_measured: int
    points_skipped: int
    frame: pd.DataFrame


def load_levels(runner: Runner, settings: Settings, bins: G.ClassBins, tp: int, top_mhz: int,
                slo: tuple[float, float], seed: int, n_probe: int, min_duration_s: float = 0.0,
                lengths: G.LengthPools | None = None) -> list[float]:
    """Offered rates for (class, tp): :data:`grid.LOAD_FRACTIONS` of the rate where the class
    breaks its SLO at the top clock (or, if it never meets it on this TP, where the instance
    saturates: throughput under 90% of the offered rate)."""

    def probe(rate: float) -> dict:
        n = G.stream_size(rate, n_probe, min_duration_s)
        a, i, o = G.draw_requests(bins, rate, n, G.point_rng(seed, bins.name, tp, 10_000), lengths)
        return runner.measure(tp, top_mhz, a, i, o)

    def slo_ok(rate: float) -> bool:
        m = probe(rate)
        return G.meets_slo(m["ttft_p99_s"], m["tbt_p99_s"], slo)

    def keeps_up(rate: float) -> bool:
        return probe(rate)["throughput_rps"] >= 0.9 * rate

    start = 0.05
    if slo_ok(start / 8):
        brk = G.find_break_rps(slo_ok, start)
    else:
        brk = G.find_break_rps(keeps_up, start)
    return [float(f"{brk * f:.4g}") for f in G.LOAD_FRACTIONS]


def run_profile(runner: Runner, settings: Settings, gpu: str, model: str, *, root=None,
                store: Store | None = None, seed: int = 0, n_requests: int = 600, n_probe: int | None = None,
                min_duration_s: float = DEFAULT_MIN_DURATION_S,
                tp_degrees: tuple[int, ...] | None = None, clocks_mhz: tuple[int, ...] | None = None,
                classes: tuple[str, ...] | None = None, progress: bool | None = None,
                backend_name: str | None = None, run_id: str | None = None,
                lengths: G.LengthPools | None = None) -> ProfileJobResult:
    """Profile ``model`` on ``gpu`` over the grid and write ``profiles/<gpu>/<model>.csv`` (and
    the store when given). Resumes an interrupted run with the same grid spec. ``run_id`` names the
    run (default: the UTC time and a random suffix); a shard of a fan-out passes its own. Every
    stream has ``n_requests`` (probes: ``n_probe``) or more, to span ``min_duration_s``. With
    ``lengths`` each class's requests take their lengths from the workload's (see :mod:`.grid`)."""
    mc, gc = model_card(model), gpu_card(gpu)
    n_probe = n_probe or n_requests
    tps = tuple(tp_degrees or fitting_tp(mc, gc, settings.hardware.tp_degrees))
    if not tps:
        raise ValueError(f"{model} fits no TP degree of {settings.hardware.tp_degrees} on {gpu}")
    clocks = tuple(sorted(clocks_mhz or gc.profile_clocks_mhz))
    names = tuple(classes or settings.classes.names())
    bins = G.class_bins(settings)
    slos = G.class_slos(settings, runner.bare_prefill_s)
    spec = {"gpu": gpu, "model": model, "tp": tps, "clocks": clocks, "classes": names, "seed": seed,
            "n_requests": n_requests, "min_duration_s": min_duration_s, "source": runner.source,
            "bins": [settings.classes.input_bins_tokens, settings.classes.output_bins_tokens],
            "slo": {k: list(v) for k, v in slos.items()},
            "lengths": lengths.fingerprint() if lengths is not None else "log-uniform in the bins"}
    spec = json.loads(json.dumps(spec))
    out = PartialProfile(profile_path(gpu, model, root), {"spec": spec})
    old = out.resume_meta()
    if old:
        meta = old
    else:
        run_id = run_id or f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        levels = {}
        for name in tqdm(names, desc="load levels", disable=progress is False, leave=False):
            for tp in tps:
                levels[f"{name}/{tp}"] = load_levels(runner, settings, bins[name], tp, clocks[-1], slos[name], seed, n_probe,
                                                     min_duration_s, lengths)
        meta = {"spec": spec, "run_id": run_id, "levels": levels,
                "spec_sha": hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]}
    done = out.start(meta)
    versions = runner.versions() + (f" lengths={lengths.source}" if lengths is not None else "")
    points = [(name, tp, li, rate, f) for name in names for tp in tps
              for li, rate in enumerate(meta["levels"][f"{name}/{tp}"]) for f in clocks]
    measured = skipped = 0
    for name, tp, li, rate, f in tqdm(points, desc=f"profile {gpu} {model}", disable=progress is False):
        if point_key(name, tp, f, rate) in done:
            skipped += 1
            continue
        a, i, o = G.draw_requests(bins[name], rate, G.stream_size(rate, n_requests, min_duration_s),
                                  G.point_rng(seed, name, tp, li), lengths)
        m = runner.measure(tp, f, a, i, o)
        row = pd.DataFrame([{"gpu": gpu, "model": model, "class_name": name, "tp": tp, "freq_mhz": f,
                             "load_rps": rate, **m, "source": runner.source, "versions": versions}])[PROFILE_COLUMNS]
        out.append(row)
        if store is not None:
            write_rows(store, row, meta["run_id"], backend_name or runner.source)
        measured += 1
    frame = out.finish()
    return ProfileJobResult(out.final, meta["run_id"], measured, skipped, frame)
