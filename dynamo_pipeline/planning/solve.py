"""Solving the pool-level MILP, with the fallbacks that make sure there is always a plan.

Solvers live in :data:`SOLVERS`, keyed by the name ``planner.solver`` takes: ``highs`` (HiGHS
through its Python API, package highspy: the default) and ``cbc`` (the CBC binary bundled with
PuLP, run through ``COIN_CMD``: the fallback). :func:`solve_model` runs one and reads the outcome
honestly: PuLP reports ``LpStatus == "Optimal"`` after a time limit too, so the status comes from
``prob.sol_status`` (1 proven optimal, 2 feasible only) and, for HiGHS, from its own info (is there
a primal solution, what is the MIP gap).

:func:`plan_pool` is the one call the planner makes per window: build, solve, extract; if the
model is infeasible (load above capacity) the all-capacity plan at top clocks, flagged with the
shortfall; if the solver stops without a solution or fails, the other solver, then the greedy
plan, flagged. Every plan records solver, status, gap, build and solve time.

Mixed instances (``planner.mixed_instances``) are planned in a second stage, because cells that
cover several classes at once make the MILP of a large fleet too hard to solve in a window: the
single-class MILP first; then each class's least-loaded instance is released and what it carried
(the class's *remainder*) is re-planned by a small MILP whose cells are the classes' own and mixed
cells in the remainders' proportions; the result is kept when it costs less.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import pulp
from pulp.apis.coin_api import PULP_CBC_CMD

from dynamo_pipeline.planning.extract import PoolPlan, counts_from_model, make_plan
from dynamo_pipeline.planning.greedy import all_capacity_counts, greedy_counts
from dynamo_pipeline.planning.model import PoolModel, build_pool_model
from dynamo_pipeline.planning.problem import ALL_POOLS, PoolProblem, mix_name, mixed_cells
from dynamo_pipeline.planning.score import score_counts

log = logging.getLogger(__name__)

#: Extra charge per GPU (W) for the dense single-class stage when only mixed instances fit the budget.
DENSE_W = 1000.0


@dataclass
class SolveResult:
    solver: str
    outcome: str            # optimal | feasible | infeasible | no_solution | error
    gap: float | None       # relative MIP gap; None when the solver does not say
    solve_s: float
    detail: str = ""


#: HiGHS options for these small covering MILPs: its RINS/RENS sub-MIP heuristics and restarts
#: took about 60% of the solve time without changing the optimum (measured on the 320-GPU bench).
HIGHS_OPTIONS = {"mip_heuristic_run_rins": False, "mip_heuristic_run_rens": False, "mip_allow_restart": False}


def _highs(time_limit_s: float, mip_rel_gap: float) -> pulp.LpSolver:
    return pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=mip_rel_gap, threads=1, **HIGHS_OPTIONS)


def _cbc(time_limit_s: float, mip_rel_gap: float) -> pulp.LpSolver:
    # The CBC PuLP bundles, through COIN_CMD (PULP_CBC_CMD itself is deprecated in PuLP 3.3).
    return pulp.COIN_CMD(path=PULP_CBC_CMD.pulp_cbc_path, msg=False, timeLimit=time_limit_s, gapRel=mip_rel_gap)


#: Solver registry: name → factory(time_limit_s, mip_rel_gap) → a PuLP solver.
SOLVERS: dict[str, Callable[[float, float], pulp.LpSolver]] = {"highs": _highs, "cbc": _cbc}


def _highs_info(lp: pulp.LpProblem) -> tuple[bool | None, float | None]:
    """(has a primal solution, MIP gap) from HiGHS's own info, when the model went through it."""
    h = getattr(lp, "solverModel", None)
    if h is None or not hasattr(h, "getInfo"):
        return None, None
    info = h.getInfo()
    has = info.primal_solution_status == 2
    gap = float(info.mip_gap) if info.mip_gap is not None and info.mip_gap < 1e30 else None
    return has, gap


def solve_model(model: PoolModel, solver: str = "highs", time_limit_s: float = 5.0,
                mip_rel_gap: float = 1e-6) -> SolveResult:
    """Solve once with the named solver; never raises for solver trouble (outcome ``error``)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; one of {sorted(SOLVERS)} (setting planner.solver)")
    lp = model.lp
    t0 = time.perf_counter()
    if not model.n:
        return SolveResult(solver, "optimal", 0.0, 0.0, "empty model")
    try:
        lp.solve(SOLVERS[solver](time_limit_s, mip_rel_gap))
    except Exception as e:  # solver binary missing, crash: the caller falls back
        return SolveResult(solver, "error", None, time.perf_counter() - t0, f"{type(e).__name__}: {e}")
    dt = time.perf_counter() - t0
    status, sol = lp.status, lp.sol_status
    has, gap = _highs_info(lp) if solver == "highs" else (None, None)
    if status == pulp.LpStatusInfeasible or sol == pulp.LpSolutionInfeasible:
        return SolveResult(solver, "infeasible", None, dt)
    if has is False or sol == pulp.LpSolutionNoSolutionFound or any(v.varValue is None for v in model.n.values()):
        return SolveResult(solver, "no_solution", None, dt, f"LpStatus={pulp.LpStatus[status]} sol_status={sol}")
    if sol == pulp.LpSolutionOptimal:
        return SolveResult(solver, "optimal", gap if gap is not None else 0.0, dt)
    if sol == pulp.LpSolutionIntegerFeasible:
        return SolveResult(solver, "feasible", gap, dt, "stopped at the time limit with an incumbent")
    return SolveResult(solver, "no_solution", None, dt, f"LpStatus={pulp.LpStatus[status]} sol_status={sol}")


def plan_pool(problem: PoolProblem, solver: str = "highs", time_limit_s: float = 5.0,
              mip_rel_gap: float = 1e-6, fallback: bool = True) -> PoolPlan:
    """Build, solve and extract one window's plan; never returns without a plan (see module doc).

    Pools with their own GPU budgets share nothing (the bound on changes is per pool), so they are
    solved one by one (each a small MILP) and the plans merged: exact, since the merged plan is
    optimal for every pool. A pool whose load is above its capacity gets all its GPUs at the
    top clock (status ``infeasible`` for the whole plan, with the shortfall); the others keep
    their optimal plans."""
    t0 = time.perf_counter()
    parts = split_by_pool(problem)
    if len(parts) > 1:
        return _merge([plan_pool(part, solver, time_limit_s, mip_rel_gap, fallback) for part in parts], problem)
    if problem.mix_spec is not None:
        base = replace(problem, mix_spec=None)
        single = plan_pool(base, solver, time_limit_s, mip_rel_gap, fallback)
        if single.status == "infeasible":
            # the budget may fit the load only with mixed instances: plan single-class instances as
            # densely as they go (every GPU charged a further DENSE_W), with room for one part-used
            # instance per class more, then mix the remainders within the budget
            slack = max((c.tp for cells in problem.cells.values() for c in cells), default=0) * len(problem.cells)
            dense = replace(base, budget={b: g + slack for b, g in problem.budget.items()},
                            costs=replace(problem.costs, idle_credit_w=problem.costs.idle_credit_w - DENSE_W))
            packed = plan_pool(dense, solver, time_limit_s, mip_rel_gap, fallback)
            return _mix_remainders(problem, packed, solver, time_limit_s, mip_rel_gap) or single
        return _mix_remainders(problem, single, solver, time_limit_s, mip_rel_gap) or single
    model = build_pool_model(problem)
    build_s = time.perf_counter() - t0
    plan = _plan_from_model(problem, model, build_s, solver, time_limit_s, mip_rel_gap, fallback)
    k = problem.costs.max_changes
    if problem.prev is None or plan.status not in ("optimal", "feasible") or not plan.score.excess_changes:
        return plan
    # Staggering: more than K instances would start in a pool. Re-solve with at most K starts per pool: the solver keeps
    # the K changes that save most net of their cost. If the load cannot be covered so, keep the plan.
    t1 = time.perf_counter()
    bounded = build_pool_model(problem, max_changes=k)
    more_build = time.perf_counter() - t1
    res = solve_model(bounded, plan.solver, time_limit_s, mip_rel_gap)
    if res.outcome in ("optimal", "feasible"):
        counts = counts_from_model(bounded)
        if score_counts(problem, counts).feasible:
            deferred = plan.score.instances_started - k
            flags = [f"staggered: {deferred:g} instance starts deferred to later windows (at most {k} per window)"]
            if res.outcome == "feasible":
                flags.append(f"time limit {time_limit_s:g} s reached: solver incumbent, gap {res.gap}")
            return make_plan(problem, counts, solver=res.solver, status=res.outcome, gap=res.gap,
                             build_s=build_s + more_build, solve_s=plan.solve_s + res.solve_s, flags=flags)
    plan.flags.append(f"{plan.score.instances_started:g} instance starts exceed the bound of {k} per window: "
                      "needed to cover the load")
    plan.build_s += more_build
    plan.solve_s += res.solve_s
    return plan


def split_by_pool(problem: PoolProblem) -> list[PoolProblem]:
    """One sub-problem per pool when every pool has its own budget; else the problem itself."""
    if ALL_POOLS in problem.budget or len(problem.pools) < 2:
        return [problem]
    parts = []
    for p in problem.pools:
        parts.append(replace(problem, demand={k: v for k, v in problem.demand.items() if k[0] == p},
                             budget={p: problem.budget[p]},
                             prev=None if problem.prev is None else {k: v for k, v in problem.prev.items() if k[0] == p},
                             flags=[]))
    return parts


_RANK = {"optimal": 0, "feasible": 1, "greedy": 2, "infeasible": 3}


def _merge(plans: list[PoolPlan], problem: PoolProblem) -> PoolPlan:
    counts: dict = {}
    for pl in plans:
        counts.update(pl.counts)
    status = max((pl.status for pl in plans), key=_RANK.__getitem__)
    gaps = [pl.gap for pl in plans]
    gap = None if any(g is None for g in gaps) and status != "optimal" else max((g or 0.0) for g in gaps)
    solvers = sorted({pl.solver for pl in plans})
    flags = [f for pl in plans for f in pl.flags if not f.startswith("shortfall")]
    return make_plan(problem, counts, solver="+".join(solvers), status=status, gap=gap,
                     build_s=sum(pl.build_s for pl in plans), solve_s=sum(pl.solve_s for pl in plans), flags=flags)


def _plan_from_model(problem: PoolProblem, model: PoolModel, build_s: float, solver: str, time_limit_s: float,
                     mip_rel_gap: float, fallback: bool) -> PoolPlan:
    order = [solver] + ([s for s in SOLVERS if s != solver] if fallback else [])
    flags: list[str] = []
    spent = 0.0
    unservable = [c for (_p, c), rps in problem.demand.items() if rps > 0 and not problem.cells.get(c)]
    if unservable:  # no instance of these classes meets the SLO at any load: infeasible as a whole
        counts, more = all_capacity_counts(problem)
        return make_plan(problem, counts, solver=solver, status="infeasible", gap=None, build_s=build_s, solve_s=0.0,
                         flags=[f"infeasible: classes {sorted(set(unservable))} meet their SLO in no profile cell; "
                                "all GPUs at the top clock"] + more)
    for name in order:
        res = solve_model(model, name, time_limit_s, mip_rel_gap)
        spent += res.solve_s
        if res.outcome in ("optimal", "feasible"):
            counts = counts_from_model(model)
            score = score_counts(problem, counts)
            if score.over_budget or score.slo_violations or (score.shortfall_rps and res.outcome == "feasible"):
                flags.append(f"{name}: solution failed the checks ({res.detail}); trying the next way")
                continue
            if res.outcome == "feasible":
                flags.append(f"time limit {time_limit_s:g} s reached: solver incumbent, gap {res.gap}")
            if name != solver:
                flags.append(f"solver {solver} failed; solved with {name}")
            return make_plan(problem, counts, solver=name, status=res.outcome, gap=res.gap,
                             build_s=build_s, solve_s=spent, flags=flags)
        if res.outcome == "infeasible":
            counts, more = all_capacity_counts(problem)
            return make_plan(problem, counts, solver=name, status="infeasible", gap=None, build_s=build_s,
                             solve_s=spent, flags=flags + ["infeasible: load above capacity within the SLOs; "
                                                           "all GPUs at the top clock"] + more)
        flags.append(f"{name}: {res.outcome} {res.detail}".strip())
        log.warning("solver %s gave no plan: %s %s", name, res.outcome, res.detail)
    t1 = time.perf_counter()
    counts = greedy_counts(problem)
    if counts is not None:
        return make_plan(problem, counts, solver="greedy", status="greedy", gap=None, build_s=build_s,
                         solve_s=spent + time.perf_counter() - t1, flags=flags + ["no solver solution: greedy plan"])
    counts, more = all_capacity_counts(problem)
    return make_plan(problem, counts, solver="greedy", status="infeasible", gap=None, build_s=build_s,
                     solve_s=spent + time.perf_counter() - t1,
                     flags=flags + ["no solver solution and the greedy plan does not fit: all GPUs at the top clock"] + more)


def _mix_remainders(problem: PoolProblem, single: PoolPlan, solver: str, time_limit_s: float,
                    mip_rel_gap: float) -> PoolPlan | None:
    """Second stage (module docstring): release each class's least-loaded instance from the
    single-class plan and re-plan the remainders with mixed cells within ``problem``'s budget. The
    mixed plan when it is feasible and cheaper than ``single``, else None."""
    if single.status not in ("optimal", "feasible") or problem.mix_spec is None:
        return None
    t0 = time.perf_counter()
    kept = dict(single.counts)
    remainder: dict[tuple[str, str], float] = {}
    for (p, c), rps in problem.demand.items():
        mine = [key for key in kept if key[0] == p and key[1] == c and kept[key] > 0]
        if rps <= 0 or not mine:
            continue
        least = min(mine, key=lambda key: (key[2].load_rps, key[2].tp))
        kept[least] -= 1
        covered = sum(k * key[2].load_rps for key, k in kept.items() if key[0] == p and key[1] == c)
        remainder[(p, c)] = max(0.0, rps - covered)
    kept = {key: k for key, k in kept.items() if k > 0}
    spec = problem.mix_spec
    mix = {}
    for p in dict.fromkeys(p for (p, _c) in remainder):
        share = {c: v for (q, c), v in remainder.items() if q == p and v > 0}
        if len(share) > 1:
            mix[p] = mixed_cells(problem.table, problem.slo, share, mix_name(p), spec.tps, spec.levels,
                                 problem.costs, spec.idle_w)
    if not mix:
        return None
    used = score_counts(problem, kept).gpus_used
    if any(used.get(b, 0) > g for b, g in problem.budget.items()):
        return None
    sub = replace(problem, demand=remainder, budget={b: g - used.get(b, 0) for b, g in problem.budget.items()},
                  prev=None, flags=[], mix_cells=mix, mix_spec=None)
    # the solver that planned the first stage (the configured one may have failed over to the other)
    part = plan_pool(sub, single.solver if single.solver in SOLVERS else solver, time_limit_s, mip_rel_gap,
                     fallback=False)
    if part.status not in ("optimal", "feasible"):
        return None
    counts = dict(kept)
    for key, k in part.counts.items():
        counts[key] = counts.get(key, 0) + k
    # solve time: the first stage's, and this stage's wall time less its model building
    mixed = make_plan(problem, counts, solver=single.solver, status=single.status, gap=single.gap,
                      build_s=single.build_s + part.build_s,
                      solve_s=single.solve_s + time.perf_counter() - t0 - part.build_s,
                      flags=[f for f in single.flags if not f.startswith("shortfall")])
    if not mixed.score.feasible or (score_counts(problem, single.counts).feasible
                                    and mixed.objective >= single.objective - 1e-12):
        return None
    return mixed
