"""Plan extraction: a solved model (or a fallback's counts) → a :class:`PoolPlan`.

A :class:`PoolPlan` is plain data: groups of identical instances (pool, class, TP, clock, load
level, count), the score (objective term by term, see ``score.py``), and how it was obtained —
solver, status, optimality gap, build and solve time, flags (shortfall, time limit, greedy,
forecast missing …). Every plan carries these, whichever path produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from dynamo_pipeline.planning.model import PoolModel
from dynamo_pipeline.planning.problem import Cell, PoolProblem
from dynamo_pipeline.planning.score import Counts, Score, instances_by_pool_tp, score_counts

#: Plan statuses: proven optimal; solver incumbent after a limit; greedy fallback; infeasible window.
STATUSES = ("optimal", "feasible", "greedy", "infeasible")


@dataclass(frozen=True)
class InstanceGroup:
    pool: str
    cls: str
    tp: int
    freq_mhz: int
    load_rps: float
    count: int
    power_w: float
    mix: tuple[tuple[str, float], ...] = ()   # mixed instance: (class, share of load_rps)

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes this group's instances serve."""
        return tuple(c for c, _sh in self.mix) if self.mix else (self.cls,)

    def class_rps(self) -> dict[str, float]:
        """rps of each class one instance serves at its planned load."""
        return {c: self.load_rps * sh for c, sh in self.mix} if self.mix else {self.cls: self.load_rps}


@dataclass
class PoolPlan:
    groups: list[InstanceGroup]
    counts: dict[tuple[str, str, Cell], int]
    score: Score
    solver: str
    status: str
    gap: float | None
    build_s: float
    solve_s: float
    flags: list[str] = field(default_factory=list)

    @property
    def objective(self) -> float:
        return self.score.objective

    @property
    def shortfall_rps(self) -> dict[str, float]:
        return {f"{c}@{p}": v for (p, c), v in self.score.shortfall_rps.items()}

    def instances_by_pool_tp(self) -> dict[tuple[str, int], int]:
        """(pool, tp) → instances: the ``prev`` argument for the next window's problem."""
        return instances_by_pool_tp(self.counts)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([g.__dict__ for g in self.groups],
                            columns=["pool", "cls", "tp", "freq_mhz", "load_rps", "count", "power_w"])

    def summary(self) -> dict:
        s = self.score
        return {"solver": self.solver, "status": self.status, "gap": self.gap, "build_s": round(self.build_s, 4),
                "solve_s": round(self.solve_s, 4), "objective": s.objective, "energy_kwh": s.energy_j / 3.6e6,
                "gpus_used": s.gpus_used, "instances": s.instances, "instances_started": s.instances_started,
                "shortfall_rps": self.shortfall_rps, "flags": self.flags}


def counts_from_model(model: PoolModel) -> dict[tuple[str, str, Cell], int]:
    """Integer instance counts from the variables' values (rounded; zeros dropped)."""
    out = {}
    for key, v in model.n.items():
        val = v.varValue
        if val is not None and val > 0.5:
            out[key] = int(round(val))
    return out


def make_plan(problem: PoolProblem, counts: Counts, *, solver: str, status: str, gap: float | None,
              build_s: float, solve_s: float, flags: list[str] | None = None) -> PoolPlan:
    if status not in STATUSES:
        raise ValueError(f"unknown plan status {status!r}; one of {STATUSES}")
    groups = [InstanceGroup(p, c, cell.tp, cell.freq_mhz, cell.load_rps, int(k), cell.power_w, cell.mix)
              for (p, c, cell), k in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2].tp, kv[0][2].freq_mhz, kv[0][2].load_rps)) if k]
    score = score_counts(problem, counts)
    all_flags = list(problem.flags) + list(flags or [])
    for d, v in score.shortfall_rps.items():
        all_flags.append(f"shortfall: class {d[1]} in pool {d[0]} is {v:.3f} rps short of its load")
    return PoolPlan(groups=groups, counts=dict(counts), score=score, solver=solver, status=status, gap=gap,
                    build_s=build_s, solve_s=solve_s, flags=all_flags)
