r"""The pool-level MILP (DESIGN §4), built in PuLP from a :class:`~.problem.PoolProblem`.

Sets
    p ∈ P pools; c ∈ C(p) classes that pool p serves; t ∈ T TP degrees; k = (t, f, ℓ) ∈ K(c) the
    SLO-feasible, non-dominated cells of class c (clock f, per-instance load level ℓ); budget keys
    b ∈ B, each covering pools P(b) (one key per pool, or one key "*" for all).

Parameters
    Λ[p,c]   load of class c that pool p must serve (rps, the forecast's upper quantile)
    κ[c,k]   objective cost of one instance in cell k for one window Δt:
             w_E·P[c,k]·Δt/3.6e6 + w_C·(P[c,k]·Δt/3.6e6)·I/1000 + w_G·t·price_GPU·Δt/3600
             (P power W of the instance's t GPUs, I grid intensity g/kWh)
    G[b]     GPU budget
    m[p,t]   instances of TP t in pool p in the previous plan (reconfiguration terms only when given)
    σ, ρ     cost of starting one GPU's share of a new instance / of re-sharding one GPU, both
             amortised over the reconfiguration horizon: a change is worth making only when the
             saving it brings over the horizon exceeds its cost
    K        instances started per pool and window (staggering); the bound is added only when the plan
             without it starts more than K (see ``solve.plan_pool``)

    π[p,c]   share of class c in pool p's load (mixed instances, ``planner.mixed_instances``)

Variables
    n[p,c,k] ∈ ℤ≥0   instances of class c in pool p running cell k
    n[p,m,k] ∈ ℤ≥0   mixed instances of pool p in cell k = (t, f, ℓ): each serves π[p,c]·ℓ of every
                     class c of the pool (``problem.mixed_cells``: ℓ = u / Σ_c π[p,c]/cap[c,t,f] for
                     utilisation levels u ≤ 1, so every class meets its SLO)
    u[p,t]   ≥ 0     instances of TP t started in pool p (new or re-sharded)
    g[p]     ≥ 0     GPUs pool p uses beyond what it used before (new instances, not re-sharding)

Objective
    min  Σ κ[c,k]·n[p,c,k]  +  Σ_{p,t} ρ·t·u[p,t]  +  Σ_p (σ − ρ)·g[p]

Constraints
    cover_load[c] / cover_load[c@p]:  Σ_k ℓ_k·n[p,c,k] + Σ_k π[p,c]·ℓ_k·n[p,m,k] ≥ Λ[p,c]
    gpu_budget[b]:                    Σ_{p∈P(b)} Σ_{c,k} t_k·n[p,c,k] ≤ G[b]
    started[p,t]:                     u[p,t] ≥ Σ_{c, k: t_k=t} n[p,c,k] − m[p,t]
    new_gpus[p]:                      g[p] ≥ Σ_{c,k} t_k·n[p,c,k] − Σ_t t·m[p,t]
    max_changes[p] (when staggering): Σ_t u[p,t] ≤ K
    0 ≤ n[p,c,k] ≤ min(⌊G/t_k⌋, ⌈Λ[p,c]/ℓ_k⌉), n[p,m,k] ≤ min(⌊G/t_k⌋, ⌈Σ_c Λ[p,c]/ℓ_k⌉)
                                      (valid: a plan with more is never cheaper)
    (n = 0 for SLO-infeasible cells: such cells get no variable at all.)

At the optimum u = max(0, N − m) and g = max(0, ΔGPUs), so a started GPU costs ρ when it was
re-sharded from the pool's own GPUs and σ when it is new. With the bound, the solver picks which
K changes to make: those with the largest savings net of their cost; the rest wait for a later
window. Only SLO-feasible cells have variables,
and at equal (c, t) a cell with no more load for no less cost is dropped (see
:func:`~.problem.useful_cells`); both keep the optimum. Scoring a plan with
:func:`~.score.score_counts` evaluates exactly this objective without the solver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pulp

from dynamo_pipeline.planning.problem import ALL_POOLS, Cell, PoolProblem


@dataclass
class PoolModel:
    """A built MILP with handles to its variables: ``n[(p, c, cell)]``, ``u[(p, t)]``, ``g[p]``."""

    problem: PoolProblem
    lp: pulp.LpProblem
    n: dict[tuple[str, str, Cell], pulp.LpVariable]
    u: dict[tuple[str, int], pulp.LpVariable] = field(default_factory=dict)
    g: dict[str, pulp.LpVariable] = field(default_factory=dict)


def demand_name(problem: PoolProblem, pool: str, cls: str) -> str:
    """``c`` when class c is served by one pool, else ``c@p``."""
    shared = sum(1 for (_p, c) in problem.demand if c == cls) > 1
    return f"{cls}@{pool}" if shared else cls


def build_pool_model(problem: PoolProblem, max_changes: int | None = None, name: str = "pool_level") -> PoolModel:
    """The MILP above for one window. Classes with no feasible cell get no cover constraint (the
    problem's flags say so; the extraction reports their shortfall)."""
    lp = pulp.LpProblem(name, pulp.LpMinimize)
    keys: list[tuple[str, str, Cell]] = []
    bound: list[float] = []                    # the load one cell's instances must not exceed alone
    for (p, c), rps in problem.demand.items():
        if rps > 0:
            for cell in problem.cells.get(c, ()):
                keys.append((p, c, cell))
                bound.append(rps)
    for p in problem.pools:
        pool_rps = sum(v for (q, _c), v in problem.demand.items() if q == p and v > 0)
        for cell in problem.mix_cells.get(p, ()) if pool_rps > 0 else ():
            keys.append((p, cell.cls, cell))
            bound.append(pool_rps)
    gpu_cap = {p: min(g for b, g in problem.budget.items() if p in problem.budget_pools(b)) for p in problem.pools}
    # n ≤ ⌈Λ/ℓ⌉: with non-negative costs, more instances of one cell than cover the load alone is
    # never better (drop one: still covered, no dearer). Tightens the relaxation at large budgets.
    n = {key: lp.add_variable(f"n_{i}", 0, min(gpu_cap[key[0]] // key[2].tp,
                                               math.ceil(rps / key[2].load_rps - 1e-9)), pulp.LpInteger)
         for i, (key, rps) in enumerate(zip(keys, bound))}

    objective = [(v, problem.cell_cost(key[2])) for key, v in n.items()]
    by_demand: dict[tuple[str, str], list] = {}
    gpus_by_pool: dict[str, list] = {p: [] for p in problem.pools}
    inst_by_pool_tp: dict[tuple[str, int], list] = {}
    for (p, _c, cell), v in n.items():
        for c, rps in cell.served():
            by_demand.setdefault((p, c), []).append((v, rps))
        gpus_by_pool[p].append((v, cell.tp))
        inst_by_pool_tp.setdefault((p, cell.tp), []).append((v, 1))

    for (p, c), rps in problem.demand.items():
        terms = by_demand.get((p, c))
        if terms and rps > 0:
            lp.addConstraint(pulp.LpAffineExpression(terms) >= rps, f"cover_load[{demand_name(problem, p, c)}]")
    for b, gpus in problem.budget.items():
        terms = [t for p in problem.budget_pools(b) for t in gpus_by_pool.get(p, [])]
        if terms:
            lp.addConstraint(pulp.LpAffineExpression(terms) <= gpus, f"gpu_budget[{b}]")

    model = PoolModel(problem=problem, lp=lp, n=n)
    if problem.prev is not None:
        costs = problem.costs
        rho, sigma = costs.reshard_per_gpu, costs.start_per_gpu
        tps = sorted({cell.tp for cells in problem.cells.values() for cell in cells} | {t for (_p, t) in problem.prev})
        for p in problem.pools:
            prev_gpus = sum(t * m for (q, t), m in problem.prev.items() if q == p)
            for t in tps:
                u = lp.add_variable(f"u_{p}_{t}", 0)
                model.u[(p, t)] = u
                lp.addConstraint(pulp.LpAffineExpression(inst_by_pool_tp.get((p, t), []) + [(u, -1)])
                                 <= problem.prev.get((p, t), 0), f"started[{p},{t}]")
                objective.append((u, rho * t))
            g = lp.add_variable(f"g_{p}", 0)
            model.g[p] = g
            lp.addConstraint(pulp.LpAffineExpression(gpus_by_pool[p] + [(g, -1)]) <= prev_gpus, f"new_gpus[{p}]")
            objective.append((g, max(0.0, sigma - rho)))
        if max_changes is not None:
            for p in problem.pools:
                lp.addConstraint(pulp.LpAffineExpression([(u, 1) for (q, _t), u in model.u.items() if q == p])
                                 <= max_changes, f"max_changes[{p}]")
    lp.setObjective(pulp.LpAffineExpression(objective))
    return model
