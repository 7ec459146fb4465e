"""Turn a planner's plan into a :class:`~dynamo_pipeline.schedules.schema.Schedule`.

Instances of each pool are packed onto its servers (largest TP first, first fit; TP 2/4/8 divide
8 GPUs, so a pool's instances fill ⌈GPUs/8⌉ servers), each with contiguous GPU ids, its planned
clock, its clock table from the profile (``planning.clocks``; a mixed instance's from its mix), the
top clock as fallback, and its share of each of its classes' load in the routing table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import pandas as pd

from dynamo_pipeline.config import Settings
from dynamo_pipeline.planning.clocks import clock_table, mix_clock_table
from dynamo_pipeline.planning.extract import InstanceGroup, PoolPlan
from dynamo_pipeline.planning.problem import profile_slos
from dynamo_pipeline.schedules.schema import ClockBand, Instance, Pool, Schedule, ScheduleError, Window


def build_schedule(plan: PoolPlan, profiles: pd.DataFrame, settings: Settings, version: int,
                   valid: Sequence[tuple[datetime, datetime]], servers_by_pool: dict[str, int] | None = None,
                   nodes: Sequence[str] | None = None, created_at: datetime | None = None,
                   plan_id: int | None = None) -> Schedule:
    """A schedule for ``plan``. ``servers_by_pool`` (from the cluster plan) fixes each pool's
    server count (default: just enough for its instances); ``nodes`` names the fleet's servers in
    order (default ``node-000`` …)."""
    return build_schedule_from_groups(plan.groups, plan.flags, profiles, settings, version, valid, servers_by_pool,
                                      nodes, created_at, plan_id)


def build_schedule_from_groups(groups: Sequence[InstanceGroup], flags: Sequence[str], profiles: pd.DataFrame,
                               settings: Settings, version: int, valid: Sequence[tuple[datetime, datetime]],
                               servers_by_pool: dict[str, int] | None = None, nodes: Sequence[str] | None = None,
                               created_at: datetime | None = None, plan_id: int | None = None) -> Schedule:
    """:func:`build_schedule` from instance groups (as stored in the ``plans`` table)."""
    gps = settings.hardware.gpus_per_server
    top = int(profiles["freq_mhz"].max())
    slos = profile_slos(settings, profiles, sorted({c for g in groups for c in g.classes}))
    by_pool: dict[str, list] = {}
    for g in groups:
        by_pool.setdefault(g.pool, []).extend([g] * g.count)
    pool_ids = list(dict.fromkeys(list(servers_by_pool or {}) + list(by_pool)))
    node_iter = iter(nodes) if nodes is not None else (f"node-{i:03d}" for i in range(10**6))
    pools, class_load, shares = [], {}, {}
    table_cache: dict[tuple, tuple[ClockBand, ...]] = {}
    for p in pool_ids:
        insts = sorted(by_pool.get(p, []), key=lambda g: (-g.tp, g.cls, g.freq_mhz))
        need = -(-sum(g.tp for g in insts) // gps)
        n_servers = max(need, (servers_by_pool or {}).get(p, 0))
        try:
            servers = [next(node_iter) for _ in range(n_servers)]
        except StopIteration:
            raise ScheduleError(f"the plan needs more servers than the {len(nodes or [])} nodes given") from None
        free = {s: 0 for s in servers}
        out = []
        for g in insts:
            node = next((s for s in servers if free[s] + g.tp <= gps), None)
            if node is None:
                raise ScheduleError(f"pool {p}: instances do not fit on {n_servers} servers of {gps} GPUs")
            gpu_ids = tuple(range(free[node], free[node] + g.tp))
            free[node] += g.tp
            key = (g.cls, g.tp, g.mix)
            if key not in table_cache:
                # the whole table: above the planned load the agent steps to the next clock that meets the
                # SLO there before the fallback (top) clock
                if g.mix:
                    bands = mix_clock_table(profiles, g.mix, g.tp, {c: slos[c] for c in g.classes},
                                            settings.planner.mix_levels, settings.planner.gpu_idle_w)
                else:
                    bands = clock_table(profiles, g.cls, g.tp, slos[g.cls])
                table_cache[key] = tuple(ClockBand(max_load_rps=ld, clock_mhz=f) for ld, f in bands) or (
                    ClockBand(max_load_rps=g.load_rps, clock_mhz=top),)
            iid = f"{p}/{node}/gpu{gpu_ids[0]}"
            out.append(Instance(instance_id=iid, node=node, gpu_ids=gpu_ids, tp=g.tp, clock_mhz=g.freq_mhz,
                                clock_table=table_cache[key], max_load_rps=g.load_rps, fallback_clock_mhz=top))
            for c, rps in g.class_rps().items():
                class_load[c] = class_load.get(c, 0.0) + rps
                shares.setdefault(c, {}).setdefault(p, {})[iid] = rps
        classes = tuple(dict.fromkeys(c for g in insts for c in g.classes)) or ("-",)
        pools.append(Pool(pool_id=p, classes=classes, servers=tuple(servers), instances=tuple(out)))
    routing = {c: {p: {i: ld / class_load[c] for i, ld in insts.items()} for p, insts in by_p.items()}
               for c, by_p in shares.items() if class_load[c] > 0}
    return Schedule(version=version, created_at=created_at or datetime.now(timezone.utc),
                    model=settings.hardware.model, gpu=settings.hardware.gpu,
                    valid=tuple(Window(start=a, end=b) for a, b in valid), pools=tuple(pools), routing=routing,
                    plan_id=plan_id, flags=tuple(flags))
