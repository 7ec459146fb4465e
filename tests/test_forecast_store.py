"""Forecasts and backtests stored and read back (SQLite and PostgreSQL), and the CLI end to end."""

from __future__ import annotations

import warnings

import pandas as pd
from click.testing import CliRunner

from dynamo_pipeline.cli import main
from dynamo_pipeline.forecast import (
    ShortHistoryWarning,
    forecast_loads,
    forecast_store,
    load_backtests,
    load_forecast,
    save_backtest,
    save_forecast,
    score,
)
from dynamo_pipeline.forecast.core import backtest_series
from dynamo_pipeline.ingest import ingest_file
from tests.conftest import SAMPLES
from tests.test_forecast_models import DAY, T0, W, daily_series, loads_frame


def test_forecast_round_trips_with_version_and_training_window(store, settings):
    y = daily_series(3, noise=0.2)
    s = settings.model_copy(update={"forecast": settings.forecast.model_copy(update={"calibration_s": DAY,
                                                                                      "min_history_s": DAY})})
    fc = forecast_loads(loads_frame(y), s, horizon="intraday", forecaster="snaive_day")
    run = save_forecast(store, fc, "test")
    back = load_forecast(store, run)
    assert len(back) == len(fc) and back.run_id.eq(run).all()
    row = back[back.class_name == "SS"].iloc[0]
    assert row.model_version == "snaive_day" and row.train_start_s == T0 and row.train_end_s == T0 + 3 * DAY
    assert row.horizon == "intraday" and row.upper_quantile == 0.9
    pd.testing.assert_series_equal(back.sort_values(["class_name", "window_start_s"]).upper_rps.reset_index(drop=True),
                                   fc.sort_values(["class_name", "window_start_s"]).upper_rps.reset_index(drop=True),
                                   check_names=False)


def test_backtest_scores_are_stored(store, settings):
    d = backtest_series(daily_series(4, noise=0.3), W, settings.forecast, "last_value", 1, "m", "SS")
    n = save_backtest(store, score(d, 0.9), "test", 1, 0.9)
    b = load_backtests(store)
    assert n == len(b) == 2 and set(b.horizon) == {"day_ahead", "intraday"}


def test_forecast_from_the_store_uses_ingested_spans(store, settings):
    ingest_file(store, SAMPLES / "AzureLLMInferenceTrace_code.csv.gz", settings, progress=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fc, run = forecast_store(store, settings, horizon="day_ahead")
    assert any(issubclass(x.category, ShortHistoryWarning) for x in w)  # one hour of history: fallback
    assert run is not None and (fc.forecaster == settings.forecast.fallback).all()
    assert (fc.rate_rps >= 0).all() and len(fc) == 9 * 86_400 // settings.window_s


def test_cli_forecast_fit_show_and_backtest_on_the_servegen_sample(tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    r = CliRunner()
    assert r.invoke(main, ["--db", db, "db", "upgrade"]).exit_code == 0
    res = r.invoke(main, ["--db", db, "forecast", "fit", "--servegen", "m-small", "--forecaster", "snaive_day",
                          "--plot", str(tmp_path / "f.png")])
    assert res.exit_code == 0, res.output
    assert "forecast run 1" in res.output and (tmp_path / "f.png").stat().st_size > 10_000
    res = r.invoke(main, ["--db", db, "forecast", "show"])
    assert res.exit_code == 0 and "servegen:m-small" in res.output
    res = r.invoke(main, ["--db", db, "forecast", "backtest", "--servegen", "m-small", "--forecasters",
                          "last_value", "--test-days", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "coverage" in res.output and "m-small" in res.output
    bad = r.invoke(main, ["--db", db, "forecast", "backtest", "--forecasters", "arima"])
    assert bad.exit_code == 2 and "unknown forecasters" in bad.output
