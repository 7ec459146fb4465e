"""Fast mode: every instance-tick of the cluster model looked up in the profile.

For an instance-tick with utilisation u at clock f on TP t, each true class c on it is looked up at
the load u · capacity_c(t, f) for its latencies (see :mod:`.profile_view`), and at its own load
for the instance's power, which combines the classes by how busy each keeps the GPUs
(:func:`~dynamo_pipeline.planning.problem.mixed_power_w`; idle power when it got nothing). Lookups
are grouped by (class, TP, clock), so a week of ticks costs a few hundred vectorised interpolations.

Per-request latencies: a request gets a TTFT and a TBT drawn from a log-normal whose median and 99th
percentile are the profile's P50 and P99 for its class at that instance-tick (seeded), so P50/P99 and
SLO attainment over many requests reproduce the profile, and latency CDFs can be drawn. A request
moved by the fast path pays ``move_penalty_s`` on its TTFT.

The clock delay: an instance whose clock changed at a tick runs the first 50–80 ms at its old clock
(energy blended over the tick).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynamo_pipeline.planning.problem import mixed_power_w
from dynamo_pipeline.sim.cluster import Assignment, ClusterParams
from dynamo_pipeline.sim.profile_view import ProfileTable

Z99 = 2.3263478740408408  # standard normal 99th percentile


def _lookup_rows(table: ProfileTable, classes: list[str], tp: np.ndarray, clock: np.ndarray,
                 loads: np.ndarray, util: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (row, class): metrics (rows × classes × 5) at the equivalent load, and instance power."""
    n, k = loads.shape
    metrics = np.full((n, k, 5), np.nan)
    base = np.full((n, k, 2), np.nan)         # each class's TTFT P50/P99 at its lowest profiled load
    idle_w = tp * table.gpu_idle_w
    own = np.repeat(idle_w[:, None].astype(float), k, axis=1)   # each class's power at its own load
    sat = own + 1.0                                              # … and at the top of its grid
    weights = np.zeros((n, k))
    cap = np.zeros((n, k))
    keys = pd.DataFrame({"tp": tp, "clock": clock}).drop_duplicates().to_numpy()
    for t, f in keys:
        sel = np.flatnonzero((tp == t) & (clock == f))
        for j, c in enumerate(classes):
            cap[sel, j] = table.capacity(c, int(t), int(f))
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(cap > 0, loads / cap, 0.0)
    for t, f in keys:
        sel = np.flatnonzero((tp == t) & (clock == f))
        for j, c in enumerate(classes):
            if not table.has(c, int(t), int(f)):
                continue
            rows = sel[loads[sel, j] > 0]
            if rows.size == 0:
                continue
            x = np.where(cap[rows, j] > 0, util[rows] * cap[rows, j], loads[rows].sum(axis=1))
            curve = table.curve(c, int(t), int(f))
            metrics[rows, j] = table.lookup(c, int(t), int(f), x)
            base[rows, j] = curve.values[0, 0:2]
            own[rows, j] = table.lookup(c, int(t), int(f), loads[rows, j])[:, 4]
            sat[rows, j] = curve.values[:, 4].max()
            weights[rows, j] = np.where(util[rows] > 0, share[rows, j] / np.maximum(util[rows], 1e-12), 0.0)
    total = weights.sum(axis=1)
    # classes with no SLO capacity on this setting share the utilisation equally (their share is undefined)
    none = (total < 1e-9) & (loads.sum(axis=1) > 0)
    weights[none] = (loads[none] > 0) / np.maximum((loads[none] > 0).sum(axis=1, keepdims=True), 1)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    return _mix_latency(metrics, base, weights), mixed_power_w(idle_w, own, sat, weights)


def _mix_latency(metrics: np.ndarray, base: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Latencies on an instance serving several classes: a decode iteration is shared by all the
    requests in the batch, so every class sees the same TBT — the classes' TBTs at the equivalent
    load, weighted by their share of the utilisation — and a request's TTFT is its own class's
    prefill time (the latency at the lowest profiled load, ``base``) plus the instance's queueing:
    the classes' TTFT above their own base, weighted the same way. One class alone: its profile."""
    present = weights > 0
    if not (present.sum(axis=1) > 1).any():
        return metrics
    out = metrics.copy()
    w = np.where(present, weights, 0.0)[:, :, None]
    m = np.nan_to_num(metrics[:, :, :4])
    b = np.nan_to_num(base)
    tbt = (w[:, :, 0:1] * m[:, :, 2:4]).sum(axis=1)                  # rows × (P50, P99)
    queue = (w[:, :, 0:1] * np.maximum(m[:, :, 0:2] - b, 0.0)).sum(axis=1)
    mixed = np.flatnonzero(present.sum(axis=1) > 1)
    for j in range(metrics.shape[1]):
        rows = mixed[present[mixed, j] & ~np.isnan(metrics[mixed, j, 0])]
        out[rows, j, 0:2] = base[rows, j] + queue[rows]
        out[rows, j, 2:4] = tbt[rows]
    return out


def evaluate_fast(trace: pd.DataFrame, asg: Assignment, table: ProfileTable, params: ClusterParams) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-request latencies (``ttft_s``, ``tbt_s``; NaN when dropped) and per instance-tick GPU
    energy (J) for the assignment."""
    ticks = asg.ticks
    tick_s = float(ticks.attrs.get("tick_s", params.tick_s))
    k = len(asg.classes)
    loads = ticks[[f"load_{c}" for c in asg.classes]].to_numpy() if len(ticks) else np.zeros((0, k))
    tp = ticks["tp"].to_numpy()
    clock = ticks["clock_mhz"].to_numpy()
    util = ticks["util"].to_numpy()
    metrics, power = _lookup_rows(table, asg.classes, tp, clock, loads, util)
    energy = power * tick_s
    changed = np.flatnonzero(ticks["prev_clock_mhz"].to_numpy() != clock) if len(ticks) else np.zeros(0, int)
    if changed.size:
        _, p_old = _lookup_rows(table, asg.classes, tp[changed], ticks["prev_clock_mhz"].to_numpy()[changed],
                                loads[changed], util[changed])
        rng = np.random.default_rng(params.seed + 1)
        d = rng.uniform(*params.clock_delay_s, size=changed.size)
        energy[changed] += (p_old - power[changed]) * d
    n = len(trace)
    ttft = np.full(n, np.nan)
    tbt = np.full(n, np.nan)
    ok = asg.row >= 0
    r = asg.row[ok]
    c = trace["cls"].to_numpy().astype(np.int64)[ok]
    m = metrics[r, c]  # (served requests × 5)
    rng = np.random.default_rng(params.seed + 2)
    z1, z2 = rng.standard_normal(r.size), rng.standard_normal(r.size)
    ttft[ok] = _lognormal(m[:, 0], m[:, 1], z1) + np.where(asg.moved[ok], params.move_penalty_s, 0.0)
    tbt[ok] = _lognormal(m[:, 2], m[:, 3], z2)
    return pd.DataFrame({"ttft_s": ttft, "tbt_s": tbt}), energy


def _lognormal(p50: np.ndarray, p99: np.ndarray, z: np.ndarray) -> np.ndarray:
    p50 = np.maximum(p50, 1e-6)
    sigma = np.log(np.maximum(p99, p50) / p50) / Z99
    return p50 * np.exp(sigma * z)
