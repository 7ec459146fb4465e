"""The pool-level MILP: optimum equals brute force, named constraints, and never no plan."""

from __future__ import annotations

import random

import pytest

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.planning import solve as solve_mod
from dynamo_pipeline.planning.model import build_pool_model
from dynamo_pipeline.planning.problem import pool_problem, resolve_loads, PlanningError
from dynamo_pipeline.planning.score import score_counts
from dynamo_pipeline.planning.solve import SOLVERS, plan_pool
from dynamo_pipeline.planning.testing import CLASSES, capacity_rps, synthetic_profile
from tests.planning_helpers import brute_force, random_profile


@pytest.fixture(scope="module")
def profile():
    return synthetic_profile()


@pytest.mark.parametrize("seed", range(40))
def test_milp_objective_equals_brute_force_on_random_small_instances(seed):
    rng = random.Random(seed)
    classes = ("SS", "LL")[: rng.choice((1, 2))]
    df = random_profile(rng, classes=classes)
    settings = load_settings(planner={"weight_energy": rng.choice((1.0, 0.5)), "weight_gpu_cost": rng.choice((0.0, 0.3)),
                                      "weight_carbon": rng.choice((0.0, 2.0)), "max_changes_per_window": rng.choice((0, 1, 3)),
                                      "reconfig_horizon_s": rng.choice((300.0, 1800.0))})
    loads = {c: round(rng.uniform(0.0, 4.0), 2) for c in classes}
    prev = {(c, t): rng.randint(0, 2) for c in classes for t in (2, 4)} if rng.random() < 0.6 else None
    budget = {c: rng.choice((4, 6, 8)) for c in classes} if rng.random() < 0.5 else rng.choice((6, 8, 10))
    prob = pool_problem(df, loads, settings, budget, prev=prev)
    plan = plan_pool(prob)
    best = brute_force(prob)
    if best is None:
        assert plan.status == "infeasible"
    else:
        assert plan.status == "optimal"
        assert plan.objective == pytest.approx(best, rel=1e-7, abs=1e-9)
        assert score_counts(prob, plan.counts).feasible


def test_constraints_are_named_after_classes_and_budgets(profile):
    settings = load_settings()
    prob = pool_problem(profile, {"SS": 5.0, "LL": 0.5}, settings, {"SS": 16, "LL": 16}, prev={("SS", 8): 1})
    lp = build_pool_model(prob, max_changes=2).lp
    # PuLP writes "[" and "]" as "_" in names (LP-file rules)
    for name in ("cover_load[SS]", "cover_load[LL]", "gpu_budget[SS]", "gpu_budget[LL]", "max_changes",
                 "new_gpus[SS]", "started[SS,8]"):
        assert lp.get_constraint_by_name(name.replace("[", "_").replace("]", "_")) is not None, name


def test_load_above_capacity_gives_all_gpus_at_top_clock_with_shortfall(profile):
    settings = load_settings()
    loads = {c: 10 * capacity_rps(c, 8, 1980) for c in ("SS", "ML")}
    plan = plan_pool(pool_problem(profile, loads, settings, 32, pools={"all": ["SS", "ML"]}))
    assert plan.status == "infeasible"
    assert plan.score.gpus_used == {"*": 32}
    assert {g.freq_mhz for g in plan.groups} == {1980}
    assert set(plan.shortfall_rps) == {"SS@all", "ML@all"} and all(v > 0 for v in plan.shortfall_rps.values())
    assert any("shortfall" in f for f in plan.flags) and any("infeasible" in f for f in plan.flags)
    assert plan.solver == "highs" and plan.gap is None and plan.solve_s > 0


def _bench_like_problem(profile, settings):
    loads = {c: 0.4 * capacity_rps(c, 8, 1980) * 3 for c in CLASSES}
    return pool_problem(profile, loads, settings, 320, pools={"all": CLASSES}, prev={("all", 8): 10, ("all", 4): 6})


def test_time_limit_incumbent_is_kept_and_flagged(profile, monkeypatch):
    """A solver stopped at its limit reports LpStatus Optimal; sol_status 2 must make the plan 'feasible'."""
    real = SOLVERS["highs"]

    class StoppedEarly:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

    def stopped(time_limit_s, gap):
        inner = real(time_limit_s, gap)
        orig = inner.actualSolve

        def actual(lp, **kw):
            out = orig(lp, **kw)
            lp.assignStatus(1, 2)  # what PuLP reports after a time limit with an incumbent
            return out
        inner.actualSolve = actual
        return inner

    monkeypatch.setitem(SOLVERS, "highs", stopped)
    monkeypatch.setattr(solve_mod, "_highs_info", lambda lp: (True, 0.015))
    plan = plan_pool(_bench_like_problem(profile, load_settings()))
    assert plan.status == "feasible" and plan.gap == 0.015
    assert any("time limit" in f for f in plan.flags)
    assert plan.score.feasible


def test_real_time_limit_on_highs_never_reports_unproven_optimum(profile):
    prob = _bench_like_problem(profile, load_settings())
    plan = plan_pool(prob, time_limit_s=1e-4, fallback=False)
    # either HiGHS proved optimality inside the limit, or the plan says it did not
    assert plan.status in ("optimal", "feasible", "greedy")
    if plan.status != "optimal":
        assert plan.flags and plan.score.feasible
    else:
        assert plan.gap is not None and plan.gap <= 1e-6


def test_no_solution_from_any_solver_gives_flagged_greedy_plan(profile, monkeypatch):
    def broken(time_limit_s, gap):
        raise RuntimeError("solver binary missing")
    monkeypatch.setitem(SOLVERS, "highs", broken)
    monkeypatch.setitem(SOLVERS, "cbc", broken)
    prob = _bench_like_problem(profile, load_settings())
    plan = plan_pool(prob)
    assert plan.status == "greedy" and plan.solver == "greedy" and plan.gap is None
    assert plan.score.feasible
    assert any("greedy" in f for f in plan.flags) and any("solver binary missing" in f for f in plan.flags)
    assert plan.objective >= plan_pool(_bench_like_problem(profile, load_settings())).objective - 1e-9


def test_cbc_fallback_reaches_the_same_optimum(profile, monkeypatch):
    prob = pool_problem(profile, {"SS": 6.0, "MM": 1.5}, load_settings(), 48, pools={"all": ["SS", "MM"]})
    highs = plan_pool(prob)
    monkeypatch.setitem(SOLVERS, "highs", lambda *a: (_ for _ in ()).throw(OSError("no highs")))
    cbc = plan_pool(prob)
    assert cbc.solver == "cbc" and cbc.status == "optimal"
    assert cbc.objective == pytest.approx(highs.objective, rel=1e-6)


def test_no_forecast_falls_back_to_observed_then_constant(profile):
    loads, src = resolve_loads(["SS", "SM"], forecast=None, observed={"SS": 2.0}, constant_rps=0.5)
    assert loads == {"SS": 2.0, "SM": 0.5} and src == "mixed"
    loads, src = resolve_loads(["SS"], forecast=None, constant_rps=1.5)
    assert src == "constant"
    plan = plan_pool(pool_problem(profile, loads, load_settings(), 16))
    assert plan.status == "optimal" and plan.score.feasible and plan.score.instances >= 1
    with pytest.raises(PlanningError, match="no load for class SM"):
        resolve_loads(["SM"])


def test_change_is_made_only_when_saving_beats_its_cost(profile):
    """With a slightly lower load, keeping the previous instances wins when starts are expensive."""
    settings = load_settings()
    first = plan_pool(pool_problem(profile, {"MM": 3.0}, settings, 64))
    prev = first.instances_by_pool_tp()
    cheap = load_settings(hardware={"server_start_s": 0.0}, planner={"reshard_s": 0.0})
    dear = load_settings(hardware={"server_start_s": 7200.0}, planner={"reshard_s": 600.0})
    lower = {"MM": 2.2}
    free = plan_pool(pool_problem(profile, lower, cheap, 64, prev=prev))
    costly = plan_pool(pool_problem(profile, lower, dear, 64, prev=prev))
    fresh = plan_pool(pool_problem(profile, lower, cheap, 64))
    assert free.objective == pytest.approx(fresh.objective)
    assert costly.score.instances_started == 0 or costly.score.reconfiguration < (
        score_counts(pool_problem(profile, lower, dear, 64, prev=prev), first.counts).operating - costly.score.operating)


def test_changes_above_the_bound_are_staggered_keeping_the_largest_savings(profile):
    """Load fell: the best plan re-shapes many instances; with a bound of 1 start per window only the
    most valuable change is made, and the plan says the rest are deferred."""
    settings = load_settings(planner={"max_changes_per_window": 1}, hardware={"server_start_s": 0.0})
    prev = {("SS", 2): 12}
    free = plan_pool(pool_problem(profile, {"SS": 12.0}, load_settings(hardware={"server_start_s": 0.0}), 64, prev=prev))
    bounded = plan_pool(pool_problem(profile, {"SS": 12.0}, settings, 64, prev=prev))
    assert free.score.instances_started > 1
    assert bounded.score.instances_started <= 1 and bounded.score.feasible
    assert any("staggered" in f for f in bounded.flags)
    assert bounded.objective >= free.objective - 1e-12


def test_bound_is_exceeded_when_the_load_needs_it(profile):
    settings = load_settings(planner={"max_changes_per_window": 1})
    plan = plan_pool(pool_problem(profile, {"SS": 30.0}, settings, 64, prev={("SS", 2): 0}))
    assert plan.status == "optimal" and plan.score.feasible
    assert plan.score.instances_started > 1 and any("exceed the bound" in f for f in plan.flags)
