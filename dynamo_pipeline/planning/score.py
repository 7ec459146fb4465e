"""Score any pool-level plan without the solver: the MILP's objective term by term, plus checks.

A plan here is a mapping (pool, class, cell) → instance count, where a cell is any row of the
profile (not only those the MILP keeps), so a baseline's plan — one pool at TP8 and the top clock,
say — is scored by the same rules as the planner's. :func:`score_counts` returns the objective
exactly as ``model.py`` defines it (operating cost and reconfiguration terms against the previous
plan; changes above the per-window bound are counted in ``excess_changes``) and what a reader needs to trust a plan: load
shortfall per class, GPUs used per budget, and cells that break their class's SLO.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dynamo_pipeline.planning.problem import Cell, PoolProblem, meets_slo, mix_name

Counts = Mapping[tuple[str, str, Cell], int]


@dataclass
class Score:
    objective: float
    operating: float
    reconfiguration: float
    energy_j: float
    gpu_s: float
    carbon_g: float
    instances: int
    instances_started: float
    new_gpus: float
    excess_changes: float            # instances started above planner.max_changes_per_window, summed over pools
    gpus_used: dict[str, int] = field(default_factory=dict)
    shortfall_rps: dict[tuple[str, str], float] = field(default_factory=dict)
    slo_violations: list[tuple[str, str, Cell]] = field(default_factory=list)
    over_budget: dict[str, int] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return not self.shortfall_rps and not self.slo_violations and not self.over_budget


def instances_by_pool_tp(counts: Counts) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for (p, _c, cell), k in counts.items():
        if k:
            out[(p, cell.tp)] = out.get((p, cell.tp), 0) + int(k)
    return out


def score_counts(problem: PoolProblem, counts: Counts, tol_rps: float = 1e-6) -> Score:
    """The objective and the checks for a plan given as instance counts per (pool, class, cell)."""
    c = problem.costs
    operating = energy_j = gpu_s = 0.0
    served: dict[tuple[str, str], float] = {}
    gpus_pool: dict[str, int] = {}
    violations = []
    total = 0
    for (p, cls, cell), k in counts.items():
        if not k:
            continue
        operating += k * problem.cell_cost(cell)
        energy_j += k * cell.power_w * c.window_s
        gpu_s += k * cell.tp * c.window_s
        for c_served, rps in cell.served():
            served[(p, c_served)] = served.get((p, c_served), 0.0) + k * rps
        gpus_pool[p] = gpus_pool.get(p, 0) + k * cell.tp
        total += k
        if cell.mix:      # a mixed cell meets its classes' SLOs by construction (problem.mixed_cells)
            if cls != mix_name(p) or any(c_m not in problem.slo for c_m, _sh in cell.mix):
                violations.append((p, cls, cell))
        elif cell.cls != cls or not meets_slo(cell, problem.slo.get(cls, (0.0, 0.0))):
            violations.append((p, cls, cell))
    shortfall = {d: rps - served.get(d, 0.0) for d, rps in problem.demand.items() if rps - served.get(d, 0.0) > tol_rps}
    gpus_used = {b: sum(gpus_pool.get(p, 0) for p in problem.budget_pools(b)) for b in problem.budget}
    over = {b: used - problem.budget[b] for b, used in gpus_used.items() if used > problem.budget[b]}

    reconf = started = new = excess = 0.0
    if problem.prev is not None:
        now = instances_by_pool_tp(counts)
        for p in problem.pools:
            tps = {t for (q, t) in now if q == p} | {t for (q, t) in problem.prev if q == p}
            ups = {t: max(0, now.get((p, t), 0) - problem.prev.get((p, t), 0)) for t in tps}
            started += sum(ups.values())
            excess += max(0, sum(ups.values()) - c.max_changes)
            d_gpus = max(0, sum(t * now.get((p, t), 0) for t in tps) - sum(t * problem.prev.get((p, t), 0) for t in tps))
            new += d_gpus
            reconf += c.reshard_per_gpu * sum(t * u for t, u in ups.items()) + max(0.0, c.start_per_gpu - c.reshard_per_gpu) * d_gpus
    carbon_g = energy_j / 3.6e6 * c.carbon_g_per_kwh
    return Score(objective=operating + reconf, operating=operating, reconfiguration=reconf,
                 energy_j=energy_j, gpu_s=gpu_s, carbon_g=carbon_g, instances=total,
                 instances_started=started, new_gpus=new, excess_changes=excess, gpus_used=gpus_used,
                 shortfall_rps=shortfall, slo_violations=violations, over_budget=over)
