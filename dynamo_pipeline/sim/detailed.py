"""Detailed mode: every instance-tick of the cluster model served by the simulated inference server.

The requests of each run of consecutive ticks in which an instance keeps its TP and clock (after
routing, moves and drops by :mod:`.cluster`) are served in one go — so queues and batches carry over
from tick to tick — by the
``sim`` hardware backend's engine (:class:`dynamo_pipeline.hardware.sim.SimServer`: continuous
batching, prefill and decode iterations, roofline timing, per-GPU power) on the instance's TP at the
tick's clock, giving every request its own TTFT and TBT (mean time between its output tokens) and
the instance its energy. The instance is on for the whole run: the time the engine did not run
(before the first arrival, after the last completion) is paid at idle power. A run's energy goes to
its ticks by the energy of the requests that arrived in each, the rest in equal shares. The engine runs one
clock per call, so a clock change starts a new run at the tick boundary (its 50–80 ms delay is
below the engine's resolution here; the fast mode blends it into the tick's energy).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from tqdm import tqdm

from dynamo_pipeline.config import Settings
from dynamo_pipeline.sim.cluster import Assignment, ClusterParams
from dynamo_pipeline.sim.profile_view import ProfileTable


def _segments(ticks: pd.DataFrame) -> list[np.ndarray]:
    """Rows of ``ticks`` grouped into runs of consecutive ticks of one instance at one TP and clock."""
    order = np.lexsort((ticks["tick"].to_numpy(), ticks["key"].to_numpy()))
    key, tick = ticks["key"].to_numpy()[order], ticks["tick"].to_numpy()[order]
    tp, clock = ticks["tp"].to_numpy()[order], ticks["clock_mhz"].to_numpy()[order]
    brk = np.ones(order.size, dtype=bool)
    brk[1:] = (key[1:] != key[:-1]) | (tick[1:] != tick[:-1] + 1) | (tp[1:] != tp[:-1]) | (clock[1:] != clock[:-1])
    return np.split(order, np.flatnonzero(brk)[1:])


_SERVERS: dict = {}


def _serve(model: str, gpu: str, t_s, inp, out, clock_mhz: float, tp: int):
    """One engine call (in this process or a worker; the engine is built once per process)."""
    from dynamo_pipeline.hardware.sim import SimServer

    key = (model, gpu)
    if key not in _SERVERS:
        _SERVERS[key] = SimServer(model, gpu)
    r = _SERVERS[key].serve(t_s, inp, out, clock_mhz, tp)
    return r.ttft_s, r.tbt_s, r.energy_per_request_j, r.energy_j, r.span_s


def evaluate_detailed(trace: pd.DataFrame, asg: Assignment, table: ProfileTable, params: ClusterParams,
                      settings: Settings, progress: bool = False, workers: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-request ``ttft_s``/``tbt_s`` (NaN when dropped) and per instance-tick energy (J). Runs are
    independent, so they are served in ``workers`` processes (default: ``DYNAMO_SIM_WORKERS`` or the
    CPU count, at most 16)."""
    workers = workers or int(os.environ.get("DYNAMO_SIM_WORKERS", min(os.cpu_count() or 1, 16)))
    hw = settings.hardware
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
    jobs = []
    for seg in _segments(ticks):
        parts = [served[starts[r]:starts[r + 1]] for r in seg]
        sel = np.concatenate(parts)
        if sel.size == 0:
            energy[seg] = table.gpu_idle_w * tp[seg[0]] * tick_s
        else:
            jobs.append((seg, parts, sel))
    # largest runs first, so the pool's last worker does not start the biggest one
    jobs.sort(key=lambda j: -j[2].size)
    args = [(hw.model, hw.gpu, t[sel], inp[sel], out[sel], float(clock[seg[0]]), int(tp[seg[0]])) for seg, _p, sel in jobs]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            results = list(tqdm(pool.map(_serve, *zip(*args)), total=len(jobs), desc="detailed replay",
                                unit="run", disable=not progress))
    else:
        results = [_serve(*a) for a in tqdm(args, desc="detailed replay", unit="run", disable=not progress)]
    for (seg, parts, sel), (r_ttft, r_tbt, r_epr, r_energy, r_span) in zip(jobs, results):
        idle_w = table.gpu_idle_w * tp[seg[0]]
        ttft[sel] = r_ttft + penalty[sel]
        tbt[sel] = np.where(np.isnan(r_tbt), 0.0, r_tbt)
        total_j = r_energy + idle_w * max(0.0, tick_s * seg.size - r_span)
        # each tick: the energy of the requests that arrived in it, plus an equal share of the rest
        bounds = np.cumsum([0] + [p_.size for p_ in parts])
        own = np.array([r_epr[bounds[i]:bounds[i + 1]].sum() for i in range(len(parts))])
        energy[seg] = own + (total_j - own.sum()) / seg.size
    return pd.DataFrame({"ttft_s": ttft, "tbt_s": tbt}), energy
