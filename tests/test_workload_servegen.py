"""ServeGen reader (bundled sample and, where present, the full snapshot) and the request generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dynamo_pipeline.classify import classify
from dynamo_pipeline.config import ClassesConfig
from dynamo_pipeline.workload import REQUEST_COLUMNS, ServeGenError, generate_requests, servegen_window_loads
from dynamo_pipeline.workload.servegen import SAMPLE_DIR, SHARED_DIR

CONTRACT = ["model", "class_name", "window_s", "window_start_s", "arrivals", "rate_rps", "input_tokens_sum",
            "output_tokens_sum", "window_start"]


@pytest.fixture(scope="module")
def m_small():
    return servegen_window_loads("m-small", 300, root=SAMPLE_DIR)


def test_sample_gives_14_days_of_every_class_at_5_minutes(m_small):
    assert set(CONTRACT) <= set(m_small.columns) and "cv" in m_small.columns
    assert m_small.window_start_s.nunique() == 14 * 288 and m_small.class_name.nunique() == 9
    total = m_small.groupby("window_start_s").rate_rps.sum()
    # the published totals of m-small (SOURCE.md): median 1159, max 3880 requests/s
    assert total.median() == pytest.approx(1159, rel=0.01) and total.max() == pytest.approx(3880, rel=0.01)
    assert m_small.window_start.iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")


def test_class_split_conserves_the_rate_and_follows_token_statistics(m_small):
    by_class = m_small.groupby("class_name").rate_rps.sum()
    assert by_class.idxmax() == "SS"  # m-small: median input 317, output 31 tokens
    mean_out = m_small.output_tokens_sum.sum() / m_small.arrivals.sum()
    assert 20 < mean_out < 120


def test_coarser_grain_averages_and_finer_grain_repeats(m_small):
    ten = servegen_window_loads("m-small", 600, root=SAMPLE_DIR, days=1)
    half_hour = servegen_window_loads("m-small", 1800, root=SAMPLE_DIR, days=1)
    five = m_small[m_small.window_start_s < m_small.window_start_s.min() + 86_400]
    assert np.isclose(five.rate_rps.sum() / 2, ten.rate_rps.sum())
    assert np.isclose(half_hour.rate_rps.sum() * 3, ten.rate_rps.sum())
    with pytest.raises(ServeGenError, match="600 s windows"):
        servegen_window_loads("m-small", 420, root=SAMPLE_DIR)


def test_unknown_model_is_refused_with_a_hint():
    with pytest.raises(ServeGenError, match="m-small and m-large"):
        servegen_window_loads("m-huge", root=SAMPLE_DIR)


@pytest.mark.skipif(not (SHARED_DIR / "language").is_dir(), reason="full ServeGen snapshot not in ../shared/data")
def test_sample_matches_the_raw_snapshot():
    a = servegen_window_loads("m-large", 600, root=SAMPLE_DIR, days=2)
    b = servegen_window_loads("m-large", 600, root=SHARED_DIR, days=2)
    assert np.allclose(a.rate_rps, b.rate_rps, rtol=1e-3, atol=1e-6)


def test_generator_matches_rates_classes_and_burstiness():
    cfg = ClassesConfig()
    loads = pd.DataFrame({"model": "m", "class_name": ["SS", "ML"], "window_s": 300, "window_start_s": 0,
                          "arrivals": [6000, 3000], "rate_rps": [20.0, 10.0], "input_tokens_sum": [6000 * 200, 3000 * 900],
                          "output_tokens_sum": [6000 * 40, 3000 * 600], "cv": [1.0, 3.0]})
    r = generate_requests(loads, cfg, seed=1)
    assert list(r.columns) == REQUEST_COLUMNS and r.request_id.is_unique
    assert r.arrived_at_us.is_monotonic_increasing and r.arrived_at_us.between(0, 300 * 1_000_000 - 1).all()
    cls = pd.Series(classify(r.input_tokens.to_numpy(), r.output_tokens.to_numpy(), cfg))
    counts = cls.value_counts()
    assert counts["SS"] == pytest.approx(6000, rel=0.1) and counts["ML"] == pytest.approx(3000, rel=0.35)
    assert set(counts.index) == {"SS", "ML"}
    ss = r[cls.to_numpy() == "SS"]
    gaps = np.diff(ss.arrived_at_us.to_numpy() / 1e6)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)  # Poisson at cv 1
    ml = r[cls.to_numpy() == "ML"]
    gml = np.diff(ml.arrived_at_us.to_numpy() / 1e6)
    assert gml.std() / gml.mean() > 2.0  # bursty at cv 3
    assert ss.input_tokens.mean() == pytest.approx(200, rel=0.25)


def test_generator_is_seeded_and_scales_rates(m_small):
    t0 = int(m_small.window_start_s.min())
    a = generate_requests(m_small, seed=7, rate_scale=0.01, until_s=t0 + 600)
    b = generate_requests(m_small, seed=7, rate_scale=0.01, until_s=t0 + 600)
    pd.testing.assert_frame_equal(a, b)
    expect = m_small[m_small.window_start_s < t0 + 600].rate_rps.sum() * 300 * 0.01
    assert len(a) == pytest.approx(expect, rel=0.15)
