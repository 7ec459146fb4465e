"""Load forecasts: per (model, class) arrival rates at the window grain, with a calibrated upper
quantile for the planner, at the day-ahead and 30-minute horizons.

Forecasters (:mod:`.models`, a registry keyed by name: ``prophet``, ``snaive_day``, ``snaive_week``,
``last_value``, ``ewma``); series preparation with gaps and outliers (:mod:`.series`); fitting,
horizons, calibration and backtests (:mod:`.core`); persistence (:mod:`.persist`); plots (:mod:`.plot`).
The planner and the DAGs call :func:`forecast_loads` (on a frame) or :func:`forecast_store` (on the store).
"""

from dynamo_pipeline.forecast.core import (
    HORIZONS,
    ShortHistoryWarning,
    backtest_loads,
    fit_series,
    forecast_loads,
    score,
)
from dynamo_pipeline.forecast.models import ForecastError, Forecaster, forecaster_names, get_forecaster, register_forecaster
from dynamo_pipeline.forecast.persist import forecast_store, load_backtests, load_forecast, save_backtest, save_forecast

__all__ = ["HORIZONS", "ForecastError", "Forecaster", "ShortHistoryWarning", "backtest_loads", "fit_series",
           "forecast_loads", "forecast_store", "forecaster_names", "get_forecaster", "load_backtests", "load_forecast",
           "register_forecaster", "save_backtest", "save_forecast", "score"]
