"""Forecasters, gaps, outliers, horizons, calibration and scoring on small synthetic series."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.forecast import (
    ForecastError,
    ShortHistoryWarning,
    fit_series,
    forecast_loads,
    forecaster_names,
    get_forecaster,
    score,
)
from dynamo_pipeline.forecast.core import backtest_series, rolling_points
from dynamo_pipeline.forecast.series import class_series, clip_outliers

W = 300
DAY = 86_400
T0 = 1_704_067_200  # Monday 2024-01-01 00:00 UTC


def daily_series(days: int, noise: float = 0.0, seed: int = 0) -> pd.Series:
    t = np.arange(T0, T0 + days * DAY, W)
    rng = np.random.default_rng(seed)
    v = 10 + 8 * np.sin(2 * np.pi * (t % DAY) / DAY) + noise * rng.standard_normal(len(t))
    return pd.Series(np.maximum(v, 0), index=pd.Index(t, name="window_start_s"))


def loads_frame(y: pd.Series, model: str = "m", cls: str = "SS") -> pd.DataFrame:
    d = pd.DataFrame({"model": model, "class_name": cls, "window_s": W, "window_start_s": y.index.to_numpy(),
                      "rate_rps": y.to_numpy()})
    d["arrivals"] = np.rint(d.rate_rps * W).astype(int)
    return d


def test_registry_knows_every_forecaster_and_rejects_unknown_names():
    assert {"prophet", "snaive_day", "snaive_week", "last_value", "ewma", "ensemble", "auto"} <= set(forecaster_names())
    with pytest.raises(ForecastError, match="known:"):
        get_forecaster("arima")


def test_seasonal_naive_repeats_yesterday_and_skips_missing_days():
    y = daily_series(3)
    f = get_forecaster("snaive_day").fit(y, W)
    future = np.arange(T0 + 3 * DAY, T0 + 3 * DAY + 5 * W, W)
    assert np.allclose(f.predict(y, future), y.loc[future[0] - DAY: future[-1] - DAY].to_numpy())
    gap = y.copy()
    gap.loc[T0 + 2 * DAY: T0 + 3 * DAY - W] = np.nan  # yesterday missing: two days back instead
    assert np.allclose(f.predict(gap, future), y.loc[future[0] - 2 * DAY: future[-1] - 2 * DAY].to_numpy())


def test_last_value_and_ewma_follow_the_latest_observed_window():
    y = pd.Series([1.0, 2.0, 3.0, np.nan], index=np.arange(4) * W)
    assert get_forecaster("last_value").predict(y, np.array([4 * W]))[0] == 3.0
    e = get_forecaster("ewma").predict(y, np.array([4 * W]))[0]
    assert 2.0 < e < 3.0


def test_missing_windows_are_nan_not_zero_while_observed_empty_classes_are_zero():
    rows = pd.DataFrame({"model": "m", "class_name": ["SS", "SS", "SM"], "window_s": W,
                         "window_start_s": [0, 3 * W, 3 * W], "rate_rps": [1.0, 2.0, 0.5]})
    s = class_series(rows, W, classes=["SS", "SM"])
    assert np.isnan(s[("m", "SS")].loc[W]) and np.isnan(s[("m", "SS")].loc[2 * W])  # no row of any class
    assert s[("m", "SM")].loc[0] == 0.0  # window observed (SS had a row), SM had no arrivals
    spans = pd.DataFrame({"first_arrival_us": [0], "last_arrival_us": [(4 * W - 1) * 1_000_000]})
    s2 = class_series(rows, W, spans, classes=["SS"])
    assert s2[("m", "SS")].loc[W] == 0.0  # inside an ingested span: a true zero


def test_outlier_clipping_caps_a_spike_and_keeps_the_rest():
    y = daily_series(2, noise=0.5)
    y.iloc[100] = 1_000.0
    c, n = clip_outliers(y, W, 8.0)
    assert n >= 1 and c.iloc[100] < 100
    assert np.allclose(c.drop(c.index[100]), y.drop(y.index[100]), rtol=0.2)


def test_intraday_correction_scales_to_the_latest_observed_level():
    cfg = load_settings(None).forecast
    y = daily_series(2)
    f = get_forecaster("snaive_day").fit(y, W)
    doubled = pd.concat([y, 2 * daily_series(1).set_axis(np.arange(T0 + 2 * DAY, T0 + 3 * DAY, W))])
    origin = T0 + 2 * DAY + 12 * 3600
    p = rolling_points(f, doubled, origin, origin + cfg.intraday_s, "intraday", cfg, W)
    truth = doubled.loc[origin: origin + cfg.intraday_s - W].to_numpy()
    assert np.allclose(p, truth, rtol=0.05)  # yesterday × (observed/forecast ≈ 2)


def test_short_history_falls_back_to_a_baseline_with_a_warning():
    cfg = load_settings(None).forecast
    with pytest.warns(ShortHistoryWarning, match="using last_value"):
        f = fit_series(daily_series(1)[:30], W, cfg, "prophet", "m", "SS")
    assert f.forecasters["day_ahead"].name == "last_value" and f.fallback_reason


def test_upper_quantile_is_calibrated_to_cover_the_configured_share():
    cfg = load_settings(None, forecast={"calibration_s": 2 * DAY}).forecast
    y = daily_series(12, noise=1.0, seed=3)
    d = backtest_series(y, W, cfg, "snaive_day", test_days=3, model="m", class_name="SS")
    s = score(d, cfg.upper_quantile)
    assert (s.coverage >= 0.85).all() and (d.upper_rps >= d.point_rps).all()


def test_prophet_learns_a_daily_cycle_on_a_short_series():
    cfg = load_settings(None, forecast={"calibration_s": 0, "min_history_s": 0}).forecast
    y = daily_series(3, noise=0.3)
    f = fit_series(y, W, cfg, "prophet")
    out = f.forecast(T0 + 3 * DAY, "day_ahead", cfg)
    truth = daily_series(4).iloc[-288:].to_numpy()
    assert np.mean(np.abs(out.rate_rps.to_numpy() - truth)) / truth.mean() < 0.1


def test_forecast_loads_returns_point_and_upper_per_class_window():
    y = daily_series(5, noise=0.5)
    loads = pd.concat([loads_frame(y, cls="SS"), loads_frame(y / 2, cls="SM")])
    s = load_settings(None, forecast={"calibration_s": DAY, "min_history_s": DAY})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShortHistoryWarning)
        fc = forecast_loads(loads, s, horizon="day_ahead")
    assert set(fc.class_name) == set(s.classes.names())
    ss = fc[fc.class_name == "SS"]
    assert len(ss) == DAY // W and ss.window_start_s.min() == T0 + 5 * DAY
    assert (fc.upper_rps >= fc.rate_rps).all() and fc.calibrated[fc.class_name == "SS"].all()
    assert ss.train_start_s.iloc[0] == T0 and ss.train_end_s.iloc[0] == T0 + 5 * DAY
    assert abs(ss.rate_rps.mean() - y.mean()) / y.mean() < 0.1
    intraday = forecast_loads(loads, s, horizon="intraday")
    assert intraday.window_start_s.nunique() == 1800 // W


def test_score_reports_mape_smape_pinball_and_coverage():
    d = pd.DataFrame({"model": "m", "class_name": "SS", "forecaster": "f", "horizon": "day_ahead",
                      "actual_rps": [10.0, 20.0, 0.0, np.nan], "point_rps": [12.0, 15.0, 0.0, 1.0],
                      "upper_rps": [13.0, 18.0, 1.0, 2.0]})
    s = score(d, 0.9).iloc[0]
    assert s.mape_pct == pytest.approx(100 * (0.2 + 0.25) / 2)
    assert s.smape_pct == pytest.approx(100 * (2 * 2 / 22 + 2 * 5 / 35 + 0) / 3)
    assert s.coverage == pytest.approx(2 / 3)
    assert s.pinball_pct == pytest.approx(100 * (0.1 * 3 + 0.9 * 2 + 0.1 * 1) / 3 / 10)
