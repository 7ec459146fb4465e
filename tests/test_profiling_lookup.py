"""Profile lookup: exact at measured points, linear between them in load and clock, vectorised
over mixed (class, tp) queries, and refusing anything outside the measured grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dynamo_pipeline.profiling import PROFILE_COLUMNS, ProfileError, ProfileLookup, ProfileRangeError, load_profile


def _frame() -> pd.DataFrame:
    rows = []
    for c in ("SS", "LL"):
        for tp in (2, 8):
            for f in (1200, 1600, 1980):
                for load in (1.0, 2.0, 4.0):
                    e = 100 * tp + f / 10 + 7 * load + (1000 if c == "LL" else 0)
                    rows.append({"gpu": "H100-SXM", "model": "M", "class_name": c, "tp": tp, "freq_mhz": f,
                                 "load_rps": load, "throughput_rps": load, "ttft_p50_s": 0.01 * load,
                                 "ttft_p99_s": 0.1 * load * 1980 / f, "tbt_p50_s": 0.02, "tbt_p99_s": 0.03,
                                 "power_w": 300.0 + load, "energy_per_request_j": e, "source": "sim", "versions": "x"})
    return pd.DataFrame(rows)[PROFILE_COLUMNS]


def test_exact_at_grid_points_and_linear_between():
    lk = ProfileLookup(_frame())
    assert lk.query("SS", 2, 1600, 2.0) == pytest.approx(200 + 160 + 14)
    # halfway in load (2 -> 4) and a quarter of the way in clock (1200 -> 1600)
    assert lk.query("LL", 8, 1300, 3.0) == pytest.approx(1000 + 800 + 130 + 21)
    assert lk.query("SS", 2, 1980, 4.0, "power_w") == pytest.approx(304.0)


def test_vectorised_over_mixed_classes_and_tp():
    lk = ProfileLookup(_frame())
    rng = np.random.default_rng(0)
    n = 1000
    c = rng.choice(["SS", "LL"], n)
    tp = rng.choice([2, 8], n)
    f = rng.uniform(1200, 1980, n)
    lo = rng.uniform(1, 4, n)
    got = lk.query(c, tp, f, lo)
    want = 100 * tp + f / 10 + 7 * lo + np.where(c == "LL", 1000, 0)
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("args,match", [
    (("SS", 2, 1600, 0.5), "outside the measured grid"),
    (("SS", 2, 1600, 4.01), "loads 1-4 rps"),
    (("SS", 2, 1100, 2.0), "clocks 1200-1980 MHz"),
    (("SS", 4, 1600, 2.0), "no class 'SS' on TP4"),
    (("MM", 2, 1600, 2.0), "no class 'MM'"),
])
def test_refuses_outside_the_grid(args, match):
    with pytest.raises(ProfileRangeError, match=match):
        ProfileLookup(_frame()).query(*args)


def test_one_bad_query_in_a_batch_refuses_the_batch():
    with pytest.raises(ProfileRangeError, match="9 rps"):
        ProfileLookup(_frame()).query("SS", 2, [1600, 1600], [2.0, 9.0])


def test_max_load_under_slo():
    lk = ProfileLookup(_frame())
    assert lk.max_load_rps("SS", 2, 1980, ttft_slo_s=0.25, tbt_slo_s=0.1) == 2.0
    assert lk.max_load_rps("SS", 2, 1980, ttft_slo_s=0.05, tbt_slo_s=0.1) == 0.0


def test_missing_profile_names_the_command(tmp_path):
    with pytest.raises(ProfileError, match="dynamo profile --backend sim --model X --gpu H100-SXM"):
        load_profile("H100-SXM", "X", root=tmp_path)


def test_non_rectangular_grid_is_rejected():
    df = _frame()
    with pytest.raises(ProfileError, match="not rectangular"):
        ProfileLookup(df.drop(index=3))
