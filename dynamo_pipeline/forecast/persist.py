"""Forecasts and backtests in the store, and forecasting straight from the store's window loads.

:func:`forecast_store` is what the planner and the DAGs call: it reads window loads and ingestion's
covered spans (so gaps stay gaps), forecasts, and with ``save`` writes a ``forecast_runs`` row and
its per-window ``forecasts`` (point, upper, forecaster version, training window). Reads return
DataFrames, never ORM rows.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
from sqlalchemy import insert, select, text

from dynamo_pipeline.config import Settings
from dynamo_pipeline.forecast.core import forecast_loads
from dynamo_pipeline.ingest.windows import covered_spans, window_loads
from dynamo_pipeline.store.db import Store
from dynamo_pipeline.store.tables.forecast import Forecast, ForecastBacktest, ForecastRun

_FORECAST_COLS = ["model", "class_name", "window_start_s", "rate_rps", "upper_rps", "model_version",
                  "train_start_s", "train_end_s", "calibrated", "fallback"]


def save_forecast(store: Store, fc: pd.DataFrame, source: str = "store", forecaster: str | None = None) -> int:
    """Write a frame of :func:`forecast_loads` as one run; returns the run id."""
    first = fc.iloc[0]
    with store.engine.begin() as conn:
        run_id = conn.execute(insert(ForecastRun).values(
            created_at=datetime.now(timezone.utc), horizon=str(first.horizon), origin_s=int(first.origin_s),
            window_s=int(first.window_s), forecaster=forecaster or str(first.forecaster),
            upper_quantile=float(first.upper_quantile), source=source).returning(ForecastRun.id)).scalar_one()
        rows = fc[_FORECAST_COLS].assign(run_id=run_id)
        rows["calibrated"] = rows.calibrated.astype(bool)
        conn.execute(insert(Forecast), rows.to_dict("records"))
    return run_id


def load_forecast(store: Store, run_id: int | None = None, horizon: str | None = None) -> pd.DataFrame:
    """One stored run (default: the newest, of ``horizon`` when given), with the run's columns."""
    q = select(ForecastRun).order_by(ForecastRun.id.desc()).limit(1)
    if run_id is not None:
        q = select(ForecastRun).where(ForecastRun.id == run_id)
    elif horizon is not None:
        q = q.where(ForecastRun.horizon == horizon)
    with store.engine.connect() as conn:
        run = conn.execute(q).mappings().first()
        if run is None:
            return pd.DataFrame(columns=[*_FORECAST_COLS, "run_id", "horizon", "origin_s", "window_s"])
        df = pd.read_sql(text("SELECT * FROM forecasts WHERE run_id = :r ORDER BY model, class_name, window_start_s"),
                         conn, params={"r": run["id"]})
    for k in ("horizon", "origin_s", "window_s", "forecaster", "upper_quantile", "created_at", "source"):
        df[k] = run[k]
    df["window_start"] = pd.to_datetime(df.window_start_s, unit="s", utc=True)
    return df


def forecast_store(store: Store, settings: Settings, *, horizon: str = "day_ahead", origin_s: int | None = None,
                   model: str | None = None, forecaster: str | None = None, save: bool = True,
                   progress: bool | None = False) -> tuple[pd.DataFrame, int | None]:
    """Forecast from the store's window loads (gaps from ``covered_spans``); returns (frame, run id)."""
    loads = window_loads(store, settings.window_s, model=model, until_s=origin_s)
    fc = forecast_loads(loads, settings, horizon=horizon, origin_s=origin_s, forecaster=forecaster,
                        spans_us=covered_spans(store), progress=progress)
    run_id = save_forecast(store, fc, "store", forecaster) if save else None
    return fc, run_id


def save_backtest(store: Store, scores: pd.DataFrame, source: str, test_days: int, upper_quantile: float) -> int:
    """Write metric rows of :func:`dynamo_pipeline.forecast.score` (``class_name`` "*" when pooled)."""
    now = datetime.now(timezone.utc)
    rows = [dict(created_at=now, source=source, model=r["model"], class_name=r.get("class_name", "*"),
                 forecaster=r["forecaster"], horizon=r["horizon"], test_days=test_days, windows=int(r["windows"]),
                 mape_pct=float(r["mape_pct"]), smape_pct=float(r["smape_pct"]), pinball_pct=float(r["pinball_pct"]),
                 coverage=float(r["coverage"]), upper_quantile=upper_quantile) for r in scores.to_dict("records")]
    with store.engine.begin() as conn:
        conn.execute(insert(ForecastBacktest), rows)
    return len(rows)


def load_backtests(store: Store) -> pd.DataFrame:
    with store.engine.connect() as conn:
        return pd.read_sql(text("SELECT * FROM forecast_backtests ORDER BY id"), conn)
