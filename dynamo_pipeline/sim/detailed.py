"""Detailed mode: every instance-tick of the cluster model served by the simulated inference server.

Each instance-tick's requests (after routing, moves and drops by :mod:`.cluster`) are served by the
``sim`` hardware backend's engine (:class:`dynamo_pipeline.hardware.sim.SimServer`: continuous
batching, prefill and decode iterations, roofline timing, per-GPU power) on the instance's TP at the
tick's clock, giving every request its own TTFT and TBT (mean time between its output tokens) and
the instance its energy. The instance is on for the whole tick: the time of the tick the engine did
not run (before the first arrival, after the last completion) is paid at idle power. A clock
change's 50–80 ms delay is applied as in fast mode: those first milliseconds run at the old clock's
idle-to-busy power ratio (energy only; the engine's latencies use the new clock).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from dynamo_pipeline.config import Settings
from dynamo_pipeline.sim.cluster import Assignment, ClusterParams
from dynamo_pipeline.sim.profile_view import ProfileTable


def evaluate_detailed(trace: pd.DataFrame, asg: Assignment, table: ProfileTable, params: ClusterParams,
                      settings: Settings, progress: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-request ``ttft_s``/``tbt_s`` (NaN when dropped) and per instance-tick energy (J)."""
    from dynamo_pipeline.hardware.sim import SimServer

    server = SimServer(settings.hardware.model, settings.hardware.gpu)
    ticks = asg.ticks
    tick_s = float(ticks.attrs.get("tick_s", params.tick_s))
    n = len(trace)
    ttft = np.full(n, np.nan)
    tbt = np.full(n, np.nan)
    energy = np.zeros(len(ticks))
    tp = ticks["tp"].to_numpy()
    clock = ticks["clock_mhz"].to_numpy()
    served = np.flatnonzero(asg.row >= 0)
    rows = asg.row[served]
    order = np.argsort(rows, kind="stable")
    served, rows = served[order], rows[order]
    starts = np.searchsorted(rows, np.arange(len(ticks) + 1))
    t = trace["t_s"].to_numpy()
    inp = trace["input_tokens"].to_numpy()
    out = trace["output_tokens"].to_numpy()
    penalty = np.where(asg.moved, params.move_penalty_s, 0.0)
    for r in tqdm(range(len(ticks)), desc="detailed replay", unit="instance-tick", disable=not progress):
        idle_w = table.gpu_idle_w * tp[r]
        sel = served[starts[r]:starts[r + 1]]
        if sel.size == 0:
            energy[r] = idle_w * tick_s
            continue
        res = server.serve(t[sel], inp[sel], out[sel], float(clock[r]), int(tp[r]))
        ttft[sel] = res.ttft_s + penalty[sel]
        tbt[sel] = np.where(np.isnan(res.tbt_s), 0.0, res.tbt_s)
        energy[r] = res.energy_j + idle_w * max(0.0, tick_s - res.span_s)
    return pd.DataFrame({"ttft_s": ttft, "tbt_s": tbt}), energy
