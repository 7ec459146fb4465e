"""Cluster level: servers per pool for the next 30 minutes, and the nightly 48-window day-ahead plan.

Every ``planner.cluster_interval_s`` (30 min) the planner sizes each pool from the *peak* forecast
upper quantile over the coming interval plus the server start-up time (a server started now serves
only after ``hardware.server_start_s``, 6–8 min for a 70B model). Pools group the classes in order
of request size (GPU-seconds per request at the class's densest SLO-feasible cell); their number is
``planner.pools`` (9 = one per class). Sizing (DESIGN §4, fragmentation):

* a pool whose peak needs fewer than ``planner.merge_below_servers`` servers merges into the next
  larger pool (all its load goes there);
* the pool-level MILP is solved once over all pools at the peak, with one shared GPU budget and
  cells costed for the whole server (an instance's GPUs plus their share of the server's non-GPU
  draw, :func:`sizing_profile`): each pool gets ⌈its instances' GPUs / GPUs per server⌉ servers.
  The GPUs its last server has spare are not lost: off-peak the pool level runs the pool's
  instances on them at lower clocks. (An earlier rule — ⌊x⌋ servers per pool, leftovers spilled to
  the next larger pool, only the largest rounded up — sized each class for whole instances at its
  densest cell and kept 17 servers on where singlepool needs 12 on the scaled Azure chat hour.)

Scale-in is the caller's choice (``scale_in``): between two cluster intervals a plan may only add
servers. Callers pass the peak over the interval and the start-up time after it
(:func:`peak_with_startup`), so a server is not stopped when it is needed again before a restart
would pay off. The pool-level MILP (``model.py``) then places instances within each pool's servers
for the same interval, costing only their draw above idle (the servers are on anyway); the cluster
plan adds the servers' own draw (non-GPU power while on, idle GPUs).
:func:`nightly_plan` chains 48 half-hour cluster plans over tomorrow's forecast, each against the
previous one, for a day-ahead capacity plan.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from dynamo_pipeline.config import Settings
from dynamo_pipeline.planning.extract import PoolPlan
from dynamo_pipeline.planning.problem import (Costs, cell_table, costs_from_settings, memo_by_identity, pool_problem,
                                              profile_slos, useful_cells)
from dynamo_pipeline.planning.solve import plan_pool


@dataclass
class PoolSpec:
    pool_id: str
    classes: tuple[str, ...]
    servers: int
    demand_rps: dict[str, float]          # class → rps this pool serves (own and spilled)
    need_servers: float


@dataclass
class ClusterPlan:
    pools: list[PoolSpec]
    pool_plan: PoolPlan
    servers: int
    servers_started: int
    servers_stopped: int
    server_energy_j: float                # non-GPU draw + idle GPUs of on servers over the interval
    interval_s: float
    flags: list[str] = field(default_factory=list)
    plan_s: float = 0.0

    @property
    def servers_by_pool(self) -> dict[str, int]:
        return {p.pool_id: p.servers for p in self.pools}

    @property
    def total_energy_j(self) -> float:
        return self.pool_plan.score.energy_j + self.server_energy_j

    def summary(self) -> dict:
        return {"servers": self.servers, "servers_by_pool": self.servers_by_pool, "started": self.servers_started,
                "stopped": self.servers_stopped, "total_energy_kwh": self.total_energy_j / 3.6e6,
                "plan_s": round(self.plan_s, 4), "pool_plan": self.pool_plan.summary(), "flags": self.flags}


def densest_cells(profiles: pd.DataFrame, settings: Settings, classes: Sequence[str],
                  costs: Costs | None = None) -> dict[str, tuple[int, float] | None]:
    """Per class, the SLO-feasible (TP, load_rps) with the most load per GPU (None when none)."""
    costs = costs or costs_from_settings(settings)
    slo = profile_slos(settings, profiles, classes)
    cells = useful_cells(cell_table(profiles), slo, costs, settings.hardware.tp_degrees)
    out: dict[str, tuple[int, float] | None] = {}
    for c in classes:
        best = max(cells.get(c, []), key=lambda x: (x.load_rps / x.tp, -x.tp), default=None)
        out[c] = (best.tp, best.load_rps) if best else None
    return out


def group_classes(sizes: Mapping[str, float], n_pools: int) -> list[tuple[str, ...]]:
    """Classes in order of request size (smallest first), cut into ``n_pools`` contiguous groups."""
    order = sorted(sizes, key=lambda c: (sizes[c], c))
    n = max(1, min(n_pools, len(order)))
    return [tuple(str(c) for c in g) for g in np.array_split(np.array(order, dtype=object), n) if len(g)]


def merge_small_groups(loads: Mapping[str, float], dense: Mapping[str, tuple[int, float] | None],
                       groups: Sequence[tuple[str, ...]], gpus_per_server: int,
                       merge_below_servers: float) -> list[tuple[str, ...]]:
    """Groups whose peak needs fewer than ``merge_below_servers`` servers at their classes' densest
    cells merge into the next larger group (the largest group absorbs what reaches it)."""
    out: list[tuple[str, ...]] = []
    carry: tuple[str, ...] = ()
    for i, group in enumerate(groups):
        merged = carry + tuple(group)
        need = sum(float(loads.get(c, 0.0)) * dense[c][0] / dense[c][1] for c in merged if dense.get(c)) / gpus_per_server
        if i < len(groups) - 1 and need < merge_below_servers:
            carry = merged
            continue
        out.append(merged)
        carry = ()
    return out


def sizing_profile(profiles: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The profile with each cell's power raised by its GPUs' share of the server's non-GPU draw:
    what an instance costs the cluster level, which decides how many servers are on (remembered
    per frame)."""
    hw = settings.hardware
    share_w = hw.server_non_gpu_power_w / hw.gpus_per_server
    return memo_by_identity(profiles, ("sizing", share_w),
                            lambda: profiles.assign(power_w=profiles["power_w"] + profiles["tp"] * share_w))


#: The sizing solve's budget: unbounded, so it finds what the peak needs (then cut to the fleet).
UNBOUNDED_GPUS = 10**7


def size_pools(profiles: pd.DataFrame, loads: Mapping[str, float], groups: Sequence[tuple[str, ...]],
               settings: Settings, interval_s: float,
               carbon_g_per_kwh: float | None = None) -> tuple[list[PoolSpec], list[str], PoolPlan]:
    """Servers per pool for the peak ``loads``: the pool-level MILP over all pools with one shared,
    unbounded budget, on :func:`sizing_profile` cells (an instance's GPUs and its
    share of the server), so each pool's instances are the cheapest that carry its peak within the
    SLOs; a pool then gets the servers its instances fill, ⌈GPUs / gpus_per_server⌉. The GPUs a
    pool's last server has left over carry its classes at lower clocks off-peak. Returns the pools
    (smallest requests first), the sizing solve's flags and its plan."""
    pl, gps = settings.planner, settings.hardware.gpus_per_server
    pools = {"pool-" + "-".join(g): {c: float(loads.get(c, 0.0)) for c in g} for g in groups}
    problem = pool_problem(sizing_profile(profiles, settings), loads, settings, UNBOUNDED_GPUS, pools=pools,
                           window_s=interval_s, carbon_g_per_kwh=carbon_g_per_kwh)
    plan = plan_pool(problem, pl.solver, pl.time_limit_s, pl.mip_rel_gap)
    gpus: dict[str, int] = {}
    for g in plan.groups:
        gpus[g.pool] = gpus.get(g.pool, 0) + g.count * g.tp
    specs = [PoolSpec(pid, tuple(dem), math.ceil(gpus.get(pid, 0) / gps - 1e-9), dict(dem), gpus.get(pid, 0) / gps)
             for pid, dem in pools.items()]
    return specs, [f"sizing: {f}" for f in plan.flags], plan


def cluster_plan(profiles: pd.DataFrame, peak_loads: Mapping[str, float], settings: Settings, max_servers: int,
                 prev: ClusterPlan | None = None, carbon_g_per_kwh: float | None = None,
                 scale_in: bool = True, headroom: float | None = None, pool_level: bool = True,
                 regroup: bool | None = None) -> ClusterPlan:
    """Servers per pool for one cluster interval from the peak loads, then the pool-level plan
    within them. ``prev`` is the previous interval's plan (servers kept, reconfiguration terms);
    ``scale_in=False`` keeps at least ``prev``'s servers in every pool (a scale-out between two
    cluster intervals, when the load outgrows the servers on). Pools are sized for the peak raised
    by ``headroom`` (default ``planner.cluster_headroom``; 0 for known loads). With
    ``pool_level=False`` only the servers are planned: the sizing solve's plan stands in for the
    pool plan (its energy counts the servers' non-GPU share), for callers that plan the pool level
    themselves every window (the simulator). ``regroup`` (default: ``scale_in``) re-cuts the classes
    into pools; without it ``prev``'s pools stay."""
    t0 = time.perf_counter()
    pl, hw = settings.planner, settings.hardware
    classes = sorted(peak_loads)
    interval_s = float(pl.cluster_interval_s)
    if prev is not None and not (scale_in if regroup is None else regroup):   # the pools stay as they are
        groups = [p.classes for p in prev.pools]
    else:
        dense = densest_cells(profiles, settings, classes, costs_from_settings(settings, interval_s, carbon_g_per_kwh))
        groups = group_classes({c: (d[0] / d[1] if d else math.inf) for c, d in dense.items()}, pl.pools)
        groups = merge_small_groups(peak_loads, dense, groups, hw.gpus_per_server, pl.merge_below_servers)
    h = pl.cluster_headroom if headroom is None else headroom
    sized_for = {c: v * (1.0 + h) for c, v in peak_loads.items()}
    specs, sizing_flags, sizing = size_pools(profiles, sized_for, groups, settings, interval_s, carbon_g_per_kwh)
    flags: list[str] = list(sizing_flags)
    prev_servers = prev.servers_by_pool if prev is not None else {}
    if prev is not None and not scale_in:   # scale-out only
        for s in specs:
            s.servers = max(s.servers, prev_servers.get(s.pool_id, 0))
    total = sum(s.servers for s in specs)
    if total > max_servers:
        over = total - max_servers
        for s in sorted(specs, key=lambda s: -s.servers):
            cut = min(over, s.servers)
            s.servers -= cut
            over -= cut
            if not over:
                break
        flags.append(f"peak load needs {total} servers, only {max_servers} exist: pools cut to fit")
    specs = [s for s in specs if s.servers > 0 or any(v > 0 for v in s.demand_rps.values())]
    pools = {s.pool_id: s.demand_rps for s in specs}
    budget = {s.pool_id: s.servers * hw.gpus_per_server for s in specs}
    if pool_level:
        prev_inst = prev.pool_plan.instances_by_pool_tp() if prev is not None else None
        problem = pool_problem(profiles, peak_loads, settings, budget, pools=pools, prev=prev_inst,
                               window_s=interval_s, carbon_g_per_kwh=carbon_g_per_kwh, gpus_on=True)
        plan = plan_pool(problem, pl.solver, pl.time_limit_s, pl.mip_rel_gap)
    else:
        plan = sizing
    servers = sum(s.servers for s in specs)
    now = {s.pool_id: s.servers for s in specs}
    started = sum(max(0, n - prev_servers.get(p, 0)) for p, n in now.items()) if prev else servers
    stopped = sum(max(0, n - now.get(p, 0)) for p, n in prev_servers.items())
    idle_gpus = servers * hw.gpus_per_server - sum(plan.score.gpus_used.values())
    server_energy_j = (servers * hw.server_non_gpu_power_w + idle_gpus * pl.gpu_idle_w) * interval_s
    if started and prev is not None:
        flags.append(f"{started} servers start: capacity arrives after {hw.server_start_s:g} s")
    return ClusterPlan(pools=specs, pool_plan=plan, servers=servers, servers_started=started, servers_stopped=stopped,
                       server_energy_j=server_energy_j, interval_s=interval_s, flags=flags + plan.flags,
                       plan_s=time.perf_counter() - t0)


def peak_with_startup(loads: Sequence[Mapping[str, float]], i: int, window_s: float, start_s: float) -> dict[str, float]:
    """Per-class peak over window i and the start-up time into the following windows."""
    ahead = 1 + math.ceil(start_s / window_s)
    span = loads[i: i + ahead]
    return {c: max(float(w.get(c, 0.0)) for w in span) for c in loads[i]}


def nightly_plan(profiles: pd.DataFrame, loads: Sequence[Mapping[str, float]] | pd.DataFrame, settings: Settings,
                 max_servers: int, carbon_g_per_kwh: Sequence[float] | None = None,
                 prev: ClusterPlan | None = None, progress: bool = False) -> list[ClusterPlan]:
    """Tomorrow's 48 half-hour cluster plans from the forecast peaks (one mapping class → rps per
    window, or a frame with one row per window and one column per class), each planned against
    the one before; ``carbon_g_per_kwh`` one intensity per window (default: the constant)."""
    if isinstance(loads, pd.DataFrame):
        loads = [row.to_dict() for _i, row in loads.iterrows()]
    loads = list(loads)
    window_s = float(settings.planner.cluster_interval_s)
    plans: list[ClusterPlan] = []
    for i in tqdm(range(len(loads)), desc="nightly plan", unit="window", disable=not progress):
        peak = peak_with_startup(loads, i, window_s, settings.hardware.server_start_s)
        carbon = None if carbon_g_per_kwh is None else float(carbon_g_per_kwh[i])
        prev = cluster_plan(profiles, peak, settings, max_servers, prev=prev, carbon_g_per_kwh=carbon)
        plans.append(prev)
    return plans
