"""A synthetic energy–performance profile with plausible physics, for tests and benchmarks.

It has exactly the columns of a real profile (DESIGN §3) so the planner cannot tell the difference:
higher TP gives more capacity and more power; a lower clock gives less power and more latency
(prefill is compute bound and scales with 1/clock, decode mostly does not); latency grows with
utilisation. Not calibrated against anything: the real profiles come from the profiling stage
(``profiles/<gpu>/<model>.csv``), and this builder exists so that the planner's tests and
benchmarks do not depend on them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

PROFILE_COLUMNS = [
    "gpu", "model", "class_name", "tp", "freq_mhz", "load_rps", "throughput_rps", "ttft_p50_s",
    "ttft_p99_s", "tbt_p50_s", "tbt_p99_s", "power_w", "energy_per_request_j", "source", "versions",
]
CLASSES = [i + o for i in "SML" for o in "SML"]
CLOCKS_MHZ = (800, 1000, 1200, 1400, 1600, 1800, 1980)
_INPUT_TOKENS = {"S": 256, "M": 1024, "L": 4096}
_OUTPUT_TOKENS = {"S": 50, "M": 200, "L": 600}
_PREFILL_GPU_S_PER_TOKEN = 2.3e-4   # 70B prefill: ~0.12 s for 4k tokens on TP8 at the top clock
_GPU_IDLE_W = 75.0
_GPU_DYNAMIC_W = 600.0


def capacity_rps(class_name: str, tp: int, freq_mhz: float, top_mhz: float = 1980.0) -> float:
    """Requests/s one instance sustains (synthetic)."""
    i, o = _INPUT_TOKENS[class_name[0]], _OUTPUT_TOKENS[class_name[1]]
    fr = freq_mhz / top_mhz
    return 3.0 * tp ** 1.1 * fr ** 0.5 / (i / 500 + o / 20)


def synthetic_profile(classes=CLASSES, tps=(2, 4, 8), clocks_mhz=CLOCKS_MHZ, load_levels: int = 10,
                      gpu: str = "H100-SXM", model: str = "Llama-2-70B") -> pd.DataFrame:
    """One row per (class, tp, clock, load level); load levels are fractions 1/L … 0.95 of the
    instance's capacity at the top clock, so low clocks run out of capacity at the high levels."""
    top = max(clocks_mhz)
    rows = []
    for c, t, f in itertools.product(classes, tps, clocks_mhz):
        i = _INPUT_TOKENS[c[0]]
        fr = f / top
        mu_top = capacity_rps(c, t, top, top)
        mu = capacity_rps(c, t, f, top)
        prefill_s = i * _PREFILL_GPU_S_PER_TOKEN / (t * fr)
        tbt0_s = 0.028 * (8 / t) ** 0.6 * (0.85 + 0.15 / fr)
        for k in range(1, load_levels + 1):
            load = round(mu_top * 0.95 * k / load_levels, 6)
            rho = load / mu
            if rho >= 0.98:
                ttft99 = tbt99 = float("inf")
                thr = mu
            else:
                ttft99 = prefill_s * (1 + 2.5 * rho / (1 - rho))
                tbt99 = tbt0_s * (1 + 1.5 * rho / (1 - 0.5 * rho))
                thr = load
            util = min(rho, 1.0)
            power = t * (_GPU_IDLE_W + _GPU_DYNAMIC_W * fr ** 2.2 * (0.25 + 0.75 * util))
            rows.append((gpu, model, c, t, f, load, thr, ttft99 / 2.5, ttft99, tbt99 / 1.4, tbt99, power,
                         power / max(thr, 1e-9), "sim", "synthetic-1"))
    df = pd.DataFrame(rows, columns=PROFILE_COLUMNS)
    df = df.replace([np.inf], 1e9)
    return df
