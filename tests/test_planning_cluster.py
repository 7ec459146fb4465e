"""Cluster level: pools sized by the MILP at the peak, merges, scale-out only between intervals."""

from __future__ import annotations

import math

import pytest

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.planning.cluster import cluster_plan, merge_small_groups, sizing_profile
from dynamo_pipeline.profiling import load_profile
from dynamo_pipeline.planning.problem import pool_problem, profile_slos

LOADS = {"SS": 21.9, "SM": 14.2, "SL": 0.03, "MS": 5.0, "MM": 2.9, "ML": 8.6, "LS": 12.6, "LM": 2.7, "LL": 0.03}


@pytest.fixture(scope="module")
def setup():
    settings = load_settings(None)
    profile = load_profile(settings.hardware.gpu, settings.hardware.model)
    return settings, profile[profile["tp"].isin(settings.hardware.tp_degrees)]


def _gpus_by_pool(plan) -> dict[str, int]:
    out: dict[str, int] = {}
    for g in plan.pool_plan.groups:
        out[g.pool] = out.get(g.pool, 0) + g.count * g.tp
    return out


def test_each_pool_gets_the_servers_its_peak_instances_fill(setup):
    settings, profile = setup
    cp = cluster_plan(profile, LOADS, settings, max_servers=100)
    gps = settings.hardware.gpus_per_server
    assert cp.servers == sum(p.servers for p in cp.pools)
    for p in cp.pools:
        assert p.servers == math.ceil(p.need_servers - 1e-9)
        assert p.servers - p.need_servers < 1                        # at most one partly used server
    # the pool plan at the same peak fits in those servers and serves every class in full
    assert not cp.pool_plan.shortfall_rps
    used = _gpus_by_pool(cp)
    assert all(used.get(p.pool_id, 0) <= p.servers * gps for p in cp.pools)
    assert {c for p in cp.pools for c in p.classes} >= {c for c, v in LOADS.items() if v > 0}


def test_pools_too_small_for_a_server_merge_into_the_next(setup):
    settings, _profile = setup
    dense = {"a": (2, 10.0), "b": (4, 10.0), "c": (8, 10.0)}
    groups = [("a",), ("b",), ("c",)]
    # a needs 0.25 servers, a+b 1.25: a merges into b; c stays
    assert merge_small_groups({"a": 10, "b": 20, "c": 50}, dense, groups, 8, 1.0) == [("a", "b"), ("c",)]
    # the largest group absorbs whatever reaches it, however small
    assert merge_small_groups({"a": 1, "b": 1, "c": 1}, dense, groups, 8, 1.0) == [("a", "b", "c")]


def test_sizing_costs_include_the_servers_non_gpu_draw(setup):
    settings, profile = setup
    hw = settings.hardware
    sized = sizing_profile(profile, settings)
    extra = (sized["power_w"] - profile["power_w"]) / profile["tp"]
    assert extra.to_numpy() == pytest.approx(hw.server_non_gpu_power_w / hw.gpus_per_server)


def test_without_scale_in_no_pool_loses_servers(setup):
    settings, profile = setup
    peak = cluster_plan(profile, LOADS, settings, max_servers=100)
    low = {c: v / 4 for c, v in LOADS.items()}
    kept = cluster_plan(profile, low, settings, max_servers=100, prev=peak, scale_in=False)
    shrunk = cluster_plan(profile, low, settings, max_servers=100, prev=peak, scale_in=True)
    for p in kept.pools:
        assert p.servers >= peak.servers_by_pool.get(p.pool_id, 0)
    assert shrunk.servers < kept.servers
    assert shrunk.servers_stopped > 0 and kept.servers_stopped == 0


def test_more_servers_than_exist_are_cut_and_flagged(setup):
    settings, profile = setup
    cp = cluster_plan(profile, LOADS, settings, max_servers=5)
    assert cp.servers <= 5
    assert any("only 5 exist" in f for f in cp.flags)
    assert cp.pool_plan.shortfall_rps          # what the cut servers cannot carry is reported


def test_the_planner_gives_long_input_classes_their_prefill_based_ttft(setup):
    # DESIGN §1: a long-input class may take long_input_ttft_factor x its bare prefill time
    settings, profile = setup
    slos = profile_slos(settings, profile)
    for c, (ttft, tbt) in slos.items():
        base_ttft, base_tbt = settings.slo.for_class(c)
        assert tbt == base_tbt and (ttft > base_ttft if c.startswith("L") else ttft == base_ttft)
    problem = pool_problem(profile, LOADS, settings, 800)
    assert problem.slo == {c: slos[c] for c in LOADS}
    assert problem.cells["LS"]                                  # feasible beyond the lowest load
    assert max(cell.load_rps for cell in problem.cells["LS"]) > 1.0
    # an explicit per-class SLO wins over the rule
    pinned = settings.model_copy(update={"slo": settings.slo.model_copy(
        update={"per_class": {"LS": {"ttft_p99_s": 0.4, "tbt_p99_s": 0.1}}})})
    assert profile_slos(pinned, profile)["LS"] == (0.4, 0.1)
