"""Mixed instances: one instance serving several classes of its pool in the forecast's proportions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.planning.clocks import mix_clock_table
from dynamo_pipeline.planning.problem import cell_table, class_curves, mix_name, mixed_cells, mixed_power_w, pool_problem
from dynamo_pipeline.planning.score import score_counts
from dynamo_pipeline.planning.solve import plan_pool
from dynamo_pipeline.planning.testing import synthetic_profile
from dynamo_pipeline.schedules.build import build_schedule

LOADS = {"SS": 3.0, "SM": 1.5, "MS": 0.4, "ML": 0.3}


@pytest.fixture(scope="module")
def profile():
    return synthetic_profile()


def _settings(mixed: bool):
    return load_settings(planner={"mixed_instances": mixed})


def test_every_mixed_cell_keeps_each_class_within_its_slo_capacity(profile):
    s = _settings(True)
    table = cell_table(profile)
    slo = {c: s.slo.for_class(c) for c in LOADS}
    curves = class_curves(table, slo)
    cells = mixed_cells(table, slo, LOADS, "mix:x", s.hardware.tp_degrees, levels=8)
    assert cells
    total = sum(LOADS.values())
    for cell in cells:
        shares = dict(cell.mix)
        assert shares == pytest.approx({c: v / total for c, v in LOADS.items()})
        caps = {c: curves[(c, cell.tp, cell.freq_mhz)][2] for c in LOADS}
        util = sum(cell.load_rps * shares[c] / caps[c] for c in LOADS)
        assert util <= 1.0 + 1e-9
        # power: at least what its busiest class alone draws at its own load, at most idle plus the
        # largest saturated dynamic power of its classes
        idle = cell.tp * 75.0
        own = [np.interp(cell.load_rps * shares[c], *curves[(c, cell.tp, cell.freq_mhz)][:2]) for c in LOADS]
        sat = [curves[(c, cell.tp, cell.freq_mhz)][1].max() for c in LOADS]
        low = [o for c, o in zip(LOADS, own) if cell.load_rps * shares[c] >= curves[(c, cell.tp, cell.freq_mhz)][0][0]]
        assert max(low, default=idle) * 0.999 <= cell.power_w <= max(sat) + 1e-6
        assert dict(cell.served()) == pytest.approx({c: cell.load_rps * shares[c] for c in LOADS})


def test_mixed_power_is_the_profiled_power_for_one_class_and_grows_with_each_class():
    idle = np.array(600.0)
    assert mixed_power_w(idle, [900.0], [1500.0], [1.0]) == pytest.approx(900.0)
    both = mixed_power_w(idle, [900.0, 800.0], [1500.0, 1300.0], [0.5, 0.5])
    assert both > 900.0                                    # a second class keeps the GPUs busier
    assert both < 600.0 + 300.0 + 200.0                    # but less than the two dynamic powers added
    assert mixed_power_w(idle, [600.0, 600.0], [1500.0, 1300.0], [0.5, 0.5]) == pytest.approx(600.0)
    rows = mixed_power_w(np.array([600.0, 600.0]), [[900.0, 600.0], [1500.0, 1300.0]],
                         [[1500.0, 1300.0], [1500.0, 1300.0]], [[1.0, 0.0], [0.5, 0.5]])
    assert rows[0] == pytest.approx(900.0) and rows[1] == pytest.approx(1400.0)   # saturated: busy all the time


def test_mixed_instances_never_cost_more_and_serve_every_class(profile):
    plans = {}
    for mixed in (False, True):
        s = _settings(mixed)
        problem = pool_problem(profile, LOADS, s, 64, pools={"all": list(LOADS)})
        assert (problem.mix_spec is not None) == mixed
        plans[mixed] = (problem, plan_pool(problem, "highs", 5.0, 1e-6))
    (p0, plain), (p1, mixed) = plans[False], plans[True]
    assert mixed.status == "optimal" and not mixed.shortfall_rps
    assert mixed.objective <= plain.objective + 1e-9
    # small loads of four classes: one class per instance leaves four part-used instances
    assert sum(g.count * g.tp for g in mixed.groups) < sum(g.count * g.tp for g in plain.groups)
    mixed_groups = [g for g in mixed.groups if g.mix]
    assert mixed_groups and all(g.cls == mix_name("all") for g in mixed_groups)
    # the scorer credits each class with its share of every mixed instance
    served = {c: 0.0 for c in LOADS}
    for g in mixed.groups:
        for c, rps in g.class_rps().items():
            served[c] += g.count * rps
    assert all(served[c] >= LOADS[c] - 1e-6 for c in LOADS)
    assert score_counts(p1, mixed.counts).feasible


def test_one_class_pools_get_no_mixed_instances(profile):
    plan = plan_pool(pool_problem(profile, LOADS, _settings(True), {c: 64 for c in LOADS}), "highs", 5.0, 1e-6)
    assert plan.status == "optimal" and not any(g.mix for g in plan.groups)


def test_mixed_instances_plan_within_a_tight_budget(profile):
    # the GPUs the mixed plan chose when unconstrained: within that budget both settings still plan
    # the whole load, and mixing never costs more
    free = plan_pool(pool_problem(profile, LOADS, _settings(True), 640, pools={"all": list(LOADS)}), "highs", 5.0, 1e-6)
    budget = sum(g.count * g.tp for g in free.groups)
    plans = {m: plan_pool(pool_problem(profile, LOADS, _settings(m), budget, pools={"all": list(LOADS)}),
                          "highs", 5.0, 1e-6) for m in (False, True)}
    for plan in plans.values():
        assert plan.status in ("optimal", "feasible") and not plan.shortfall_rps
        assert sum(g.count * g.tp for g in plan.groups) <= budget
    assert plans[True].objective <= plans[False].objective + 1e-9


def test_cell_tables_and_curves_are_remembered_per_frame_not_per_content(profile):
    """The planner re-reads one profile every window; derived tables are computed once per frame
    object. A copy (the way to pass a changed profile) gets its own."""
    from dynamo_pipeline.planning.cluster import sizing_profile

    settings = load_settings(None)
    assert cell_table(profile) is cell_table(profile)
    copy = profile.copy()
    assert cell_table(copy) is not cell_table(profile) and cell_table(copy) == cell_table(profile)
    cheaper = profile.assign(power_w=profile["power_w"] / 2)
    c = next(iter(cell_table(cheaper)))
    assert cell_table(cheaper)[c].power_w == pytest.approx(cell_table(profile)[c].power_w / 2)
    slo = {"SS": (0.4, 0.1)}
    assert class_curves(cell_table(profile), slo) is class_curves(cell_table(profile), dict(slo))
    assert class_curves(cell_table(profile), {"SS": (0.2, 0.05)}) is not class_curves(cell_table(profile), slo)
    assert sizing_profile(profile, settings) is sizing_profile(profile, settings)
