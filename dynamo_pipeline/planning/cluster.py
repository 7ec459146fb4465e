"""Cluster level: servers per pool for the next 30 minutes, and the nightly 48-window day-ahead plan.

Every ``planner.cluster_interval_s`` (30 min) the planner sizes each pool from the *peak* forecast
upper quantile over the coming interval plus the server start-up time (a server started now serves
only after ``hardware.server_start_s``, 6–8 min for a 70B model). Pools group the classes in order
of request size (GPU-seconds per request at the class's densest SLO-feasible cell); their number is
``planner.pools`` (9 = one per class). Fragmentation rules (DESIGN §4):

* a pool gets ⌊x⌋ servers for a need of x servers; the fraction left over spills, as load of its
  own classes, to the next larger pool (which serves it on its own servers);
* a pool that needs less than ``planner.merge_below_servers`` servers merges into the next larger
  pool (all its load goes there);
* only the largest-request pool is over-provisioned: it gets ⌈x⌉ servers.

Scale-in happens only when it pays: a server stopped now and needed again costs its start-up
energy, so a pool keeps servers it no longer needs when the interval is shorter than the start-up
time. The pool-level MILP (``model.py``) then places instances within each pool's servers for the
same interval; the cluster plan adds the servers' own draw (non-GPU power while on, idle GPUs).
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
from dynamo_pipeline.planning.problem import Costs, costs_from_settings, pool_problem, useful_cells, cell_table
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
    slo = {c: settings.slo.for_class(c) for c in classes}
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


def _gpus_whole_instances(demand: Mapping[str, float], dense: Mapping[str, tuple[int, float] | None]) -> int:
    return sum(math.ceil(v / dense[c][1] - 1e-9) * dense[c][0] for c, v in demand.items() if v > 0 and dense.get(c))


def size_pools(loads: Mapping[str, float], dense: Mapping[str, tuple[int, float] | None],
               groups: Sequence[tuple[str, ...]], gpus_per_server: int, merge_below_servers: float) -> list[PoolSpec]:
    """Apply the fragmentation rules to per-class peak loads; pools in increasing request size.

    A pool's need x (servers) is its load at each class's densest SLO-feasible cell. A pool that
    is not the largest keeps ⌊x⌋ servers and fills them with whole instances (then, with GPUs left,
    with instances for a class's remainder); the load those do not take spills to the next pool."""
    specs: list[PoolSpec] = []
    carry: dict[str, float] = {}
    carry_classes: tuple[str, ...] = ()
    for i, group in enumerate(groups):
        demand = {c: float(loads.get(c, 0.0)) for c in group}
        for c, v in carry.items():
            demand[c] = demand.get(c, 0.0) + v
        classes = tuple(dict.fromkeys(carry_classes + group))
        servable = {c: v for c, v in demand.items() if dense.get(c)}
        need = sum(v * dense[c][0] / dense[c][1] for c, v in servable.items()) / gpus_per_server
        pool_id = "pool-" + "-".join(group)
        if i == len(groups) - 1:
            servers = math.ceil(_gpus_whole_instances(servable, dense) / gpus_per_server)
            specs.append(PoolSpec(pool_id, tuple(c for c in classes if c in group or demand[c] > 0), servers,
                                  {c: v for c, v in demand.items() if v > 0 or c in group}, need))
            break
        if need < merge_below_servers:
            carry, carry_classes = demand, classes          # near-empty: merge into the next pool
            continue
        servers = math.floor(need + 1e-9)
        left = servers * gpus_per_server
        kept: dict[str, float] = {}
        # load spilled from smaller pools first (this pool is where it must go), then big instances
        order = sorted(servable, key=lambda c: (c not in carry, -dense[c][0]))
        for c in order:
            t, ld = dense[c]
            k = min(math.floor(servable[c] / ld + 1e-9), left // t)
            kept[c] = k * ld
            left -= k * t
        for c in order:
            t, _ld = dense[c]
            if servable[c] - kept[c] > 1e-12 and t <= left and servable[c] - kept[c] <= dense[c][1]:
                kept[c] = servable[c]
                left -= t
        specs.append(PoolSpec(pool_id, tuple(c for c in classes if c in group or kept.get(c, 0) > 0), servers,
                              {c: v for c, v in kept.items() if v > 0 or c in group}, need))
        carry = {c: v - kept.get(c, 0.0) for c, v in demand.items() if v - kept.get(c, 0.0) > 1e-9}
        carry_classes = tuple(c for c in classes if c in carry)
    return specs


def cluster_plan(profiles: pd.DataFrame, peak_loads: Mapping[str, float], settings: Settings, max_servers: int,
                 prev: ClusterPlan | None = None, carbon_g_per_kwh: float | None = None) -> ClusterPlan:
    """Servers per pool for one cluster interval from the peak loads, then the pool-level plan
    within them. ``prev`` is the previous interval's plan (servers kept, reconfiguration terms)."""
    t0 = time.perf_counter()
    pl, hw = settings.planner, settings.hardware
    classes = sorted(peak_loads)
    interval_s = float(pl.cluster_interval_s)
    costs = costs_from_settings(settings, interval_s, carbon_g_per_kwh)
    dense = densest_cells(profiles, settings, classes, costs)
    groups = group_classes({c: (d[0] / d[1] if d else math.inf) for c, d in dense.items()}, pl.pools)
    specs = size_pools(peak_loads, dense, groups, hw.gpus_per_server, pl.merge_below_servers)
    flags: list[str] = []
    prev_servers = prev.servers_by_pool if prev is not None else {}
    if prev is not None and interval_s < hw.server_start_s:   # scale-in would not pay for the restart
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
    prev_inst = prev.pool_plan.instances_by_pool_tp() if prev is not None else None
    problem = pool_problem(profiles, peak_loads, settings, budget, pools=pools, prev=prev_inst,
                           window_s=interval_s, carbon_g_per_kwh=carbon_g_per_kwh)
    plan = plan_pool(problem, pl.solver, pl.time_limit_s, pl.mip_rel_gap)
    servers = sum(s.servers for s in specs)
    started = sum(max(0, s.servers - prev_servers.get(s.pool_id, 0)) for s in specs) if prev else servers
    stopped = sum(max(0, n - budget.get(p, 0) // hw.gpus_per_server) for p, n in prev_servers.items())
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
