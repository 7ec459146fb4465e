"""The cluster model: routing by predicted class, the paper's fast path (re-order, raise the clock,
move, drop — each counted), and server start/drain/re-shard accounting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.planning.testing import synthetic_profile
from dynamo_pipeline.sim.cluster import ClusterParams, assign
from dynamo_pipeline.sim.plan import InstancePlan, WindowPlan
from dynamo_pipeline.sim.profile_view import ProfileTable, class_slos
from dynamo_pipeline.sim.replay import simulate

CLASSES = [i + o for i in "SML" for o in "SML"]
SS, LL = CLASSES.index("SS"), CLASSES.index("LL")


@pytest.fixture(scope="module")
def profile():
    return synthetic_profile()


@pytest.fixture(scope="module")
def table(profile):
    return ProfileTable(profile, class_slos(load_settings(None), profile))


def _trace(t_s, cls, pred):
    return pd.DataFrame({"t_s": np.asarray(t_s, float), "input_tokens": 100, "output_tokens": 50,
                         "cls": np.asarray(cls, np.int8), "pred_cls": np.asarray(pred, np.int8)})


def _two_pools(table, ss_clock=800):
    ss = InstancePlan("ss0", "pSS", 2, ("SS",), ss_clock, 1.0, table.top_clock(2))
    ll = InstancePlan("ll0", "pLL", 8, ("LL",), table.top_clock(8), 0.1, table.top_clock(8))
    return WindowPlan(pools={"pSS": ("SS",), "pLL": ("LL",)}, instances=[ss, ll])


def test_mispredicted_long_request_is_reordered_and_moved_to_its_pool(table):
    # 5 LL requests predicted SS land on the TP2 SS instance, which cannot serve LL within its SLO
    tr = _trace(np.linspace(1, 50, 5), [LL] * 5, [SS] * 5)
    asg = assign(tr, [_two_pools(table)], table, CLASSES, ClusterParams(tick_s=60))
    assert asg.counters["reordered"] == 5
    assert asg.counters["moved"] == 5 and asg.moved.all()
    assert asg.counters["dropped"] == 0
    served_on = asg.ticks.iloc[asg.row]["instance_id"]
    assert set(served_on) == {"ll0"}


def test_overload_raises_the_clock_before_moving(table):
    cap_low = table.capacity("SS", 2, 800)
    cap_top = table.capacity("SS", 2, table.top_clock(2))
    assert cap_top > cap_low > 0
    rate = (cap_low + cap_top) / 2  # above the low clock's capacity, below the top clock's
    n = int(rate * 60)
    tr = _trace(np.sort(np.random.default_rng(0).uniform(0, 60, n)), [SS] * n, [SS] * n)
    plan = _two_pools(table)
    asg = assign(tr, [plan], table, CLASSES, ClusterParams(tick_s=60))
    assert asg.counters["clock_raises"] == 1
    assert asg.counters["moved"] == 0 and asg.counters["dropped"] == 0
    first = asg.ticks[(asg.ticks["tick"] == 0) & (asg.ticks["instance_id"] == "ss0")]
    assert int(first["clock_mhz"].iloc[0]) == table.top_clock(2)


def test_requests_beyond_all_capacity_are_dropped_and_counted(table):
    cap_top = table.capacity("SS", 2, table.top_clock(2))
    n = int(cap_top * 60 * 3)  # three times what the only SS instance can take; LL pool cannot help much
    tr = _trace(np.sort(np.random.default_rng(1).uniform(0, 60, n)), [SS] * n, [SS] * n)
    plan = WindowPlan(pools={"pSS": ("SS",)}, instances=[InstancePlan("ss0", "pSS", 2, ("SS",), 800, 1.0, table.top_clock(2))])
    asg = assign(tr, [plan], table, CLASSES, ClusterParams(tick_s=60))
    assert asg.counters["dropped"] > 0
    assert asg.counters["dropped"] == int((asg.row < 0).sum())
    # what stays fits: utilisation at the top clock is at most 1
    assert asg.ticks["util"].max() <= 1.0 + 1e-6


def test_requests_moved_off_an_overloaded_instance_are_spread_over_the_tick(table):
    """Twice the capacity arrives evenly through a tick: what stays on the instance must arrive
    evenly too (the overload lasts all tick), not be the tick's first half."""
    cap_top = table.capacity("SS", 2, table.top_clock(2))
    n = int(cap_top * 60 * 2)
    tr = _trace(np.sort(np.random.default_rng(2).uniform(0, 60, n)), [SS] * n, [SS] * n)
    plan = WindowPlan(pools={"pSS": ("SS",)},
                      instances=[InstancePlan(f"ss{k}", "pSS", 2, ("SS",), 800, 1.0 if k == 0 else 1e-6,
                                              table.top_clock(2)) for k in range(3)])
    asg = assign(tr, [plan], table, CLASSES, ClusterParams(tick_s=60))
    on = np.asarray(asg.ticks.iloc[np.maximum(asg.row, 0)]["instance_id"]) == "ss0"
    kept = tr["t_s"].to_numpy()[on & (asg.row >= 0)]
    assert asg.counters["moved"] > n / 3                  # about half had to go elsewhere
    first, second = (kept < 30).sum(), (kept >= 30).sum()
    assert abs(first - second) < 0.1 * kept.size          # kept ones: as many in each half of the tick
    per_10s = np.bincount((kept // 10).astype(int), minlength=6)
    assert per_10s.min() > 0.7 * per_10s.mean()


def test_fast_mode_mixed_instance_shares_tbt_and_queueing_delay():
    from dynamo_pipeline.sim.fast import _mix_latency

    # rows: a pure class-0 instance; a mixed one, 3/4 of its utilisation from class 1
    metrics = np.full((2, 2, 5), np.nan)
    metrics[0, 0] = [0.10, 0.30, 0.020, 0.040, 900.0]
    metrics[1, 0] = [0.10, 0.30, 0.020, 0.040, 900.0]      # class 0 (short prompts) at the equivalent load
    metrics[1, 1] = [0.60, 1.40, 0.030, 0.080, 950.0]      # class 1 (long prompts)
    base = np.full((2, 2, 2), np.nan)
    base[:, 0] = [0.05, 0.10]
    base[1, 1] = [0.40, 0.90]
    w = np.array([[1.0, 0.0], [0.25, 0.75]])
    out = _mix_latency(metrics, base, w)
    np.testing.assert_allclose(out[0], metrics[0])                     # one class: its profile
    tbt = 0.25 * metrics[1, 0, 2:4] + 0.75 * metrics[1, 1, 2:4]
    np.testing.assert_allclose(out[1, 0, 2:4], tbt)
    np.testing.assert_allclose(out[1, 1, 2:4], tbt)                    # one TBT for the whole batch
    queue = 0.25 * (metrics[1, 0, 0:2] - base[1, 0]) + 0.75 * (metrics[1, 1, 0:2] - base[1, 1])
    np.testing.assert_allclose(out[1, 0, 0:2], base[1, 0] + queue)     # short prompts wait behind long ones
    np.testing.assert_allclose(out[1, 1, 0:2], base[1, 1] + queue)
    assert out[1, 0, 1] > metrics[1, 0, 1]
    np.testing.assert_allclose(out[:, :, 4], metrics[:, :, 4])        # power is not touched here


def test_server_start_and_drain_are_paid_in_energy(profile):
    s = load_settings(None)
    tr = _trace(np.linspace(0, 899, 90), [SS] * 90, [SS] * 90)
    small = WindowPlan(pools={"pSS": ("SS",)}, instances=[InstancePlan("a", "pSS", 8, ("SS",), 1980, 1, 1980)])
    big = WindowPlan(pools={"pSS": ("SS",)}, instances=[InstancePlan(f"b{k}", "pSS", 8, ("SS",), 1980, 1, 1980) for k in range(2)])

    from dynamo_pipeline.sim import policies

    policies.POLICIES["_test_up_down"] = lambda ctx: [small, big, small]
    try:
        r = simulate(tr, "_test_up_down", s, profile)
    finally:
        del policies.POLICIES["_test_up_down"]
    w = r.windows
    assert list(w["servers_on"]) == [1, 2, 1]
    assert list(w["servers_started"]) == [0, 1, 0] and list(w["servers_drained"]) == [0, 0, 1]
    non_gpu = s.hardware.server_non_gpu_power_w
    # whole-server minus GPU energy is exactly the non-GPU draw of every server-second on
    extra = (w["server_energy_j"] - w["gpu_energy_j"]).to_numpy()
    expected = non_gpu * np.array([300.0, 2 * 300 + s.hardware.server_start_s, 300 + 30.0])
    assert extra == pytest.approx(expected)


def test_each_class_is_routed_by_the_instances_planned_rps_of_that_class(table):
    # a mixed instance plans 3 rps of SS and 1 of LL; a single-class one 1 rps of SS: SS splits 3:1
    top = table.top_clock(8)
    mixed = InstancePlan("mix0", "all", 8, ("SS", "LL"), top, 4.0, top, (), (("SS", 3.0), ("LL", 1.0)))
    single = InstancePlan("ss0", "all", 8, ("SS",), top, 1.0, top)
    plan = WindowPlan(pools={"all": ("SS", "LL")}, instances=[mixed, single])
    n = 600                                        # 2 rps: no instance is overloaded, nothing is moved
    tr = _trace(np.linspace(0, 299, n), [SS] * n, [SS] * n)
    asg = assign(tr, [plan], table, CLASSES, ClusterParams(tick_s=300, seed=3))
    assert asg.counters["moved"] == 0 and asg.counters["dropped"] == 0
    on = asg.ticks.iloc[asg.row]["instance_id"].value_counts()
    assert on["mix0"] / n == pytest.approx(0.75, abs=0.06)
    assert mixed.weight("LL") == 1.0 and mixed.weight("SS") == 3.0 and single.weight("SS") == 1.0
