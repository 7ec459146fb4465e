"""What a policy hands the simulator for each pool-level window: pools, instances, clocks, routing.

A :class:`WindowPlan` is plain data: for every pool, the classes it serves, and its instances, each
with a TP degree, the classes it serves, its planned clock and a clock table by observed load (as
the node agent would apply it, DESIGN §5), and the most load it may be given. Routing splits each
class's arrivals over the instances that serve it in proportion to their planned load of that class
(``class_rps``; ``max_load_rps`` for single-class instances).

Policies build plans directly (baselines) or from the planner's output (:func:`from_schedule` reads
a published :class:`~dynamo_pipeline.schedules.schema.Schedule`, so the simulator replays exactly
what agents and gateways would receive).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dynamo_pipeline.schedules.schema import Schedule


@dataclass(frozen=True)
class InstancePlan:
    instance_id: str
    pool: str
    tp: int
    classes: tuple[str, ...]
    clock_mhz: int
    max_load_rps: float
    fallback_clock_mhz: int
    clock_table: tuple[tuple[float, int], ...] = ()  # (max observed rps, clock); empty: fixed clock
    class_rps: tuple[tuple[str, float], ...] = ()    # routing weight per class; empty: max_load_rps for each

    def weight(self, cls: str) -> float:
        """This instance's routing weight for ``cls`` (its planned rps of that class)."""
        return dict(self.class_rps).get(cls, self.max_load_rps) if self.class_rps else self.max_load_rps

    def clock_for_load(self, load_rps: float) -> int:
        """The clock the agent picks for an observed load: the table's first band that covers it, the
        fallback above the table, the planned clock when there is no table."""
        if not self.clock_table:
            return self.clock_mhz
        for max_rps, clock in self.clock_table:
            if load_rps <= max_rps:
                return clock
        return self.fallback_clock_mhz


@dataclass
class WindowPlan:
    """One pool-level window of a policy: ``pools`` maps pool id → classes served, from the smallest
    to the largest requests (overflow goes to the last); ``instances`` all instances;
    ``servers_by_pool`` the servers the cluster level keeps on (None: just enough for the instances)."""

    pools: dict[str, tuple[str, ...]]
    instances: list[InstancePlan]
    gpus_per_server: int = 8
    servers_by_pool: dict[str, int] | None = None
    flags: list[str] = field(default_factory=list)

    def servers(self, pool: str) -> int:
        """Servers a pool has on: as planned (cluster level), and at least its instances' GPUs
        packed onto whole servers."""
        need = math.ceil(sum(i.tp for i in self.instances if i.pool == pool) / self.gpus_per_server)
        return max(need, (self.servers_by_pool or {}).get(pool, 0))

    def total_servers(self) -> int:
        return sum(self.servers(p) for p in self.pools)

    def pool_of_class(self) -> dict[str, str]:
        return {c: p for p, cs in self.pools.items() for c in cs}


def from_schedule(schedule: Schedule, gpus_per_server: int = 8) -> WindowPlan:
    """The simulator's view of a published schedule: routing shares become ``max_load_rps`` weights
    within each class, pools keep their classes and instances their clock tables."""
    share_by_inst: dict[str, dict[str, float]] = {}
    for cls, by_pool in schedule.routing.items():
        for _pool, shares in by_pool.items():
            for inst, share in shares.items():
                share_by_inst.setdefault(inst, {})[cls] = share
    pools = {p.pool_id: tuple(p.classes) for p in schedule.pools}
    instances = []
    for p in schedule.pools:
        for i in p.instances:
            classes = tuple(c for c in share_by_inst.get(i.instance_id, {}) if share_by_inst[i.instance_id][c] > 0)
            instances.append(InstancePlan(
                instance_id=i.instance_id, pool=p.pool_id, tp=i.tp, classes=classes or tuple(p.classes),
                clock_mhz=i.clock_mhz, max_load_rps=i.max_load_rps, fallback_clock_mhz=i.fallback_clock_mhz,
                clock_table=tuple((b.max_load_rps, b.clock_mhz) for b in i.clock_table),
                class_rps=tuple((c, share_by_inst[i.instance_id][c]) for c in classes)))
    servers = {p.pool_id: len(p.servers) for p in schedule.pools}
    return WindowPlan(pools=pools, instances=instances, gpus_per_server=gpus_per_server, servers_by_pool=servers,
                      flags=list(schedule.flags))
