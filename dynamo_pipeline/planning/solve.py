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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import pulp
from pulp.apis.coin_api import PULP_CBC_CMD

from dynamo_pipeline.planning.extract import PoolPlan, counts_from_model, make_plan
from dynamo_pipeline.planning.greedy import all_capacity_counts, greedy_counts
from dynamo_pipeline.planning.model import PoolModel, build_pool_model
from dynamo_pipeline.planning.problem import PoolProblem
from dynamo_pipeline.planning.score import score_counts

log = logging.getLogger(__name__)


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
    """Build, solve and extract one window's plan; never returns without a plan (see module doc)."""
    t0 = time.perf_counter()
    model = build_pool_model(problem)
    build_s = time.perf_counter() - t0
    plan = _plan_from_model(problem, model, build_s, solver, time_limit_s, mip_rel_gap, fallback)
    k = problem.costs.max_changes
    if problem.prev is None or plan.status not in ("optimal", "feasible") or plan.score.instances_started <= k:
        return plan
    # Staggering: more than K instances would start. Re-solve with at most K starts: the solver keeps
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
