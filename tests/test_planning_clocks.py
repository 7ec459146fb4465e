"""Instance-level clock tables never pick a clock that breaks the SLO according to the profile."""

from __future__ import annotations

import random

import pytest

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.planning.clocks import clock_table
from dynamo_pipeline.planning.problem import PlanningError
from dynamo_pipeline.planning.testing import CLASSES, synthetic_profile
from tests.planning_helpers import random_profile


def _check(df, cls, tp, slo):
    rows = df[(df.class_name == cls) & (df.tp == tp)]
    table = clock_table(df, cls, tp, slo)
    for load in sorted(rows.load_rps.unique()):
        band = next((b for b in table if load <= b[0]), None)
        if band is None:
            continue  # above the table: fallback clock
        row = rows[(rows.load_rps == load) & (rows.freq_mhz == band[1])].iloc[0]
        assert row.ttft_p99_s <= slo[0] and row.tbt_p99_s <= slo[1], (cls, tp, load, band)
        # and it is the lowest-power clock that meets the SLO at that load
        ok = rows[(rows.load_rps == load) & (rows.ttft_p99_s <= slo[0]) & (rows.tbt_p99_s <= slo[1])]
        assert row.power_w == ok.power_w.min()
    return table


@pytest.mark.parametrize("cls", CLASSES)
def test_clock_table_meets_slo_at_every_profile_load(cls):
    df = synthetic_profile()
    settings = load_settings()
    for tp in (2, 4, 8):
        _check(df, cls, tp, settings.slo.for_class(cls))


@pytest.mark.parametrize("seed", range(20))
def test_clock_table_on_random_profiles_never_breaks_slo(seed):
    df = random_profile(random.Random(seed), classes=("SS",), tps=(2,), clocks=(800, 1200, 1600, 1980), levels=5)
    _check(df, "SS", 2, (0.4, 0.1))


def test_table_stops_below_first_load_where_no_clock_meets_slo():
    df = synthetic_profile(classes=["LL"])
    table = clock_table(df, "LL", 4, (0.4, 0.1))
    rows = df[(df.class_name == "LL") & (df.tp == 4)]
    top_ok = rows[(rows.ttft_p99_s <= 0.4) & (rows.tbt_p99_s <= 0.1)].load_rps.max()
    assert table and table[-1][0] <= top_ok
    assert clock_table(df, "LL", 2, (0.4, 0.1)) == []       # TP2 never meets LL's SLO here
    with pytest.raises(PlanningError, match="no rows for class SS"):
        clock_table(df, "SS", 8, (0.4, 0.1))


def test_lower_load_gets_a_clock_no_higher_than_needed():
    df = synthetic_profile(classes=["MM"])
    table = clock_table(df, "MM", 8, (0.4, 0.1))
    assert table[0][1] < 1980 and [b[0] for b in table] == sorted(b[0] for b in table)
