"""Profile views for the simulator: per (class, TP, clock) curves of latency and power against load.

The simulator reads a profile (DESIGN §3 columns: ``class_name, tp, freq_mhz, load_rps,
throughput_rps, ttft_p50_s, ttft_p99_s, tbt_p50_s, tbt_p99_s, power_w, energy_per_request_j``) as
:class:`ProfileTable`: one sorted load grid per (class, tp, clock) and vectorised linear
interpolation over it (:meth:`ProfileTable.lookup`), the SLO *capacity* of an instance — the
highest load at which its P99 TTFT and TBT still meet the class's SLO (:meth:`capacity`) — and
the idle power below the lowest measured load (GPUs idle at ``gpu_idle_w`` each at load 0).

Loads above the grid are clamped to its last point: the cluster model never leaves an instance
above capacity (it raises the clock, moves requests or drops them first), so a clamped lookup only
happens for the last few requests of an overloaded tick, which are then dropped anyway.

An instance serving several classes is modelled by its *utilisation* u = Σ_c λ_c / cap_c: each class
is looked up at the load u · cap_c (the load of that class alone that fills the instance as much),
and the instance's power is the mean of those powers weighted by each class's share of u.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dynamo_pipeline.planning.problem import profile_slos

PROFILE_COLUMNS = ("class_name", "tp", "freq_mhz", "load_rps", "ttft_p50_s", "ttft_p99_s", "tbt_p50_s",
                   "tbt_p99_s", "power_w")
#: Metrics interpolated by :meth:`ProfileTable.lookup`, in this order.
METRICS = ("ttft_p50_s", "ttft_p99_s", "tbt_p50_s", "tbt_p99_s", "power_w")


class ProfileError(ValueError):
    """The profile cannot serve the simulation; the message names what is missing."""


@dataclass
class Curve:
    """One (class, tp, clock) row set: loads ascending and the metrics at each (rows × METRICS)."""

    load_rps: np.ndarray
    values: np.ndarray
    capacity_rps: float


class ProfileTable:
    """Curves keyed by (class, tp, freq_mhz), SLO capacities and the clocks each TP was profiled at."""

    def __init__(self, profile: pd.DataFrame, slo: dict[str, tuple[float, float]], gpu_idle_w: float = 75.0):
        missing = [c for c in PROFILE_COLUMNS if c not in profile.columns]
        if missing:
            raise ProfileError(f"profile lacks columns {missing}; use a profile written by `dynamo profile` "
                               "(profiles/<gpu>/<model>.csv)")
        if profile.empty:
            raise ProfileError("profile is empty; run `dynamo profile` or point at profiles/<gpu>/<model>.csv")
        self.gpu_idle_w = float(gpu_idle_w)
        self.slo = dict(slo)
        self.curves: dict[tuple[str, int, int], Curve] = {}
        for (c, t, f), g in profile.groupby(["class_name", "tp", "freq_mhz"], sort=True):
            g = g.sort_values("load_rps")
            load = g["load_rps"].to_numpy(float)
            vals = g[list(METRICS)].to_numpy(float)
            ttft_slo, tbt_slo = self.slo.get(str(c), (np.inf, np.inf))
            ok = (vals[:, 1] <= ttft_slo) & (vals[:, 3] <= tbt_slo) & (load > 0)
            cap = _capacity(load, vals[:, 1], vals[:, 3], ttft_slo, tbt_slo) if ok.any() else 0.0
            self.curves[(str(c), int(t), int(f))] = Curve(load, vals, cap)
        self.classes = sorted({k[0] for k in self.curves})
        self.tps = sorted({k[1] for k in self.curves})
        self.clocks = {t: sorted({k[2] for k in self.curves if k[1] == t}) for t in self.tps}

    def top_clock(self, tp: int) -> int:
        return self.clocks[tp][-1]

    def has(self, cls: str, tp: int, freq_mhz: int) -> bool:
        return (cls, tp, freq_mhz) in self.curves

    def curve(self, cls: str, tp: int, freq_mhz: int) -> Curve:
        try:
            return self.curves[(cls, tp, freq_mhz)]
        except KeyError:
            raise ProfileError(f"profile has no rows for class {cls}, TP{tp}, {freq_mhz} MHz; profile that "
                               f"setting or use one of TP {self.tps}, clocks {self.clocks.get(tp, [])}") from None

    def nearest_clock(self, tp: int, freq_mhz: int) -> int:
        """The lowest profiled clock at or above ``freq_mhz`` (the top clock when none is)."""
        for f in self.clocks[tp]:
            if f >= freq_mhz:
                return f
        return self.clocks[tp][-1]

    def capacity(self, cls: str, tp: int, freq_mhz: int) -> float:
        """Highest load (rps) at which this class alone meets its P99 SLOs on this setting (0: never)."""
        c = self.curves.get((cls, tp, freq_mhz))
        return 0.0 if c is None else c.capacity_rps

    def lookup(self, cls: str, tp: int, freq_mhz: int, load_rps: np.ndarray) -> np.ndarray:
        """Metrics (len(load) × METRICS) at each load by linear interpolation; below the grid's first
        point, latency is the first point's and power falls linearly to idle at load 0."""
        c = self.curve(cls, tp, freq_mhz)
        x = np.clip(np.asarray(load_rps, float), 0.0, c.load_rps[-1])
        out = np.empty((x.size, len(METRICS)))
        for j in range(len(METRICS)):
            out[:, j] = np.interp(x, c.load_rps, c.values[:, j])
        lo = c.load_rps[0]
        if lo > 0:
            below = x < lo
            if below.any():
                idle_w = self.gpu_idle_w * tp
                p0 = c.values[0, 4]
                out[below, 4] = idle_w + (p0 - idle_w) * x[below] / lo
        return out

    def idle_power_w(self, tp: int) -> float:
        return self.gpu_idle_w * tp


def _capacity(load: np.ndarray, ttft: np.ndarray, tbt: np.ndarray, ttft_slo: float, tbt_slo: float) -> float:
    """Largest load where both P99s meet the SLO, interpolating across the first violating point."""
    ok = (ttft <= ttft_slo) & (tbt <= tbt_slo)
    if not ok[0] and load[0] > 0:
        return 0.0
    first_bad = np.flatnonzero(~ok)
    if first_bad.size == 0:
        return float(load[-1])
    i = int(first_bad[0])
    if i == 0:
        return 0.0
    # linear crossing between point i-1 (ok) and i (bad) for whichever metric broke first
    fr = []
    for y, s in ((ttft, ttft_slo), (tbt, tbt_slo)):
        if y[i] > s:
            fr.append(1.0 if y[i] == y[i - 1] else (s - y[i - 1]) / (y[i] - y[i - 1]))
    t = max(0.0, min(1.0, min(fr)))
    return float(load[i - 1] + t * (load[i] - load[i - 1]))


def with_class_slos(settings, profile: pd.DataFrame):
    """Settings whose ``slo.per_class`` spells out every class's SLO from :func:`class_slos`, so the
    planner (which reads ``settings.slo.for_class``) and the simulator judge by the same SLOs."""
    slos = class_slos(settings, profile)
    per_class = {c: {"ttft_p99_s": v[0], "tbt_p99_s": v[1]} for c, v in slos.items()}
    return settings.model_copy(update={"slo": settings.slo.model_copy(update={"per_class": per_class})})


def class_slos(settings, profile: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """(TTFT, TBT) P99 SLO per class, as the planner judges them
    (:func:`~dynamo_pipeline.planning.problem.profile_slos`)."""
    return profile_slos(settings, profile)
