"""Profiles: the full H100 x Llama-2-70B grid on the simulated server, and 1M vectorised profile
lookups beside a bare np.interp over the same number of points (a 1-D ceiling) in the same run.

BENCH_PROFILE_GRID=0 skips the grid (it takes minutes); the lookups use the shipped profile."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from bench.common import timed
from dynamo_pipeline.config import load_settings
from dynamo_pipeline.profiling import ProfileLookup, SimRunner, load_profile, run_profile

N_LOOKUPS = 1_000_000


def main() -> None:
    df = load_profile("H100-SXM", "Llama-2-70B")
    lk = ProfileLookup(df)
    rng = np.random.default_rng(0)
    keys = lk.keys()
    pick = rng.integers(0, len(keys), N_LOOKUPS)
    cls = np.array([k[0] for k in keys])[pick]
    tp = np.array([k[1] for k in keys])[pick]
    lo_l = np.array([lk.loads_rps(*k)[0] for k in keys])[pick]
    hi_l = np.array([lk.loads_rps(*k)[-1] for k in keys])[pick]
    load = lo_l + rng.uniform(size=N_LOOKUPS) * (hi_l - lo_l)
    freq = rng.uniform(800, 1980, N_LOOKUPS)

    med_mixed, _ = timed(lambda: lk.query(cls, tp, freq, load))
    one = keys[0]
    l1 = np.linspace(lk.loads_rps(*one)[0], lk.loads_rps(*one)[-1], N_LOOKUPS)
    med_one, _ = timed(lambda: lk.query(one[0], one[1], 1500.0, l1))
    xp, fp = lk.loads_rps(*one), np.arange(len(lk.loads_rps(*one)), dtype=float)
    med_interp, _ = timed(lambda: np.interp(l1, xp, fp))
    print(f"{'1M lookups, mixed 27 (class, tp) keys':44s} {med_mixed:8.3f} s  ({med_mixed / med_interp:5.1f}x np.interp)")
    print(f"{'1M lookups, one (class, tp) key':44s} {med_one:8.3f} s  ({med_one / med_interp:5.1f}x np.interp)")
    print(f"{'np.interp, 1M points (1-D ceiling)':44s} {med_interp:8.3f} s")

    if os.environ.get("BENCH_PROFILE_GRID", "1") == "0":
        return
    settings = load_settings(None)
    with tempfile.TemporaryDirectory(prefix="bench_profiles_") as tmp:
        t = time.perf_counter()
        res = run_profile(SimRunner("Llama-2-70B", "H100-SXM"), settings, "H100-SXM", "Llama-2-70B", root=tmp,
                          progress=False)
        wall = time.perf_counter() - t
    print(f"{'full grid H100 x Llama-2-70B (sim)':44s} {wall:8.1f} s  ({len(res.frame)} points, "
          f"{wall / len(res.frame) * 1e3:.0f} ms/point incl. load-level search, 600 requests/point)")
