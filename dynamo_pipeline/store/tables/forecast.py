"""Tables owned by forecasting, length prediction and misprediction accounting.

``forecast_runs`` (one fit: forecaster, model version, horizon, origin, training window) with its
per-window ``forecasts`` (point and upper rate); ``forecast_backtests`` (metrics per model, class,
forecaster and horizon); ``length_models`` (a trained output-length predictor: version, file,
training metadata, evaluation); ``mispredictions`` (per window, requests by true and predicted class).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dynamo_pipeline.store.tables.base import Base


class ForecastRun(Base):
    __tablename__ = "forecast_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    horizon: Mapped[str] = mapped_column(String(16))
    origin_s: Mapped[int] = mapped_column(BigInteger, index=True)
    window_s: Mapped[int] = mapped_column(Integer)
    forecaster: Mapped[str] = mapped_column(String(64))  # as configured
    upper_quantile: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(Text)  # "store" or the data set it was fitted on


class Forecast(Base):
    """Per (run, model, class, window): the point rate and the upper quantile the planner provisions for."""

    __tablename__ = "forecasts"

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    class_name: Mapped[str] = mapped_column(String(8), primary_key=True)
    window_start_s: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    rate_rps: Mapped[float] = mapped_column(Float)
    upper_rps: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64))  # the forecaster used for this series
    train_start_s: Mapped[int] = mapped_column(BigInteger)
    train_end_s: Mapped[int] = mapped_column(BigInteger)
    calibrated: Mapped[bool] = mapped_column(Boolean)
    fallback: Mapped[str] = mapped_column(Text, default="")


class ForecastBacktest(Base):
    __tablename__ = "forecast_backtests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(128))
    class_name: Mapped[str] = mapped_column(String(8))  # "*" for all classes of the model
    forecaster: Mapped[str] = mapped_column(String(64))
    horizon: Mapped[str] = mapped_column(String(16))
    test_days: Mapped[int] = mapped_column(Integer)
    windows: Mapped[int] = mapped_column(BigInteger)
    mape_pct: Mapped[float] = mapped_column(Float)
    smape_pct: Mapped[float] = mapped_column(Float)
    pinball_pct: Mapped[float] = mapped_column(Float)
    coverage: Mapped[float] = mapped_column(Float)
    upper_quantile: Mapped[float] = mapped_column(Float)


class LengthModel(Base):
    __tablename__ = "length_models"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    path: Mapped[str] = mapped_column(Text)
    data: Mapped[str] = mapped_column(Text)  # what it was trained on
    train_rows: Mapped[int] = mapped_column(BigInteger)
    output_bins_tokens: Mapped[str] = mapped_column(String(32))
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    metadata_json: Mapped[str] = mapped_column(Text)


class Misprediction(Base):
    """Requests per window by true and predicted class (equal classes included, so totals add up)."""

    __tablename__ = "mispredictions"

    length_model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    window_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_start_s: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    true_class: Mapped[str] = mapped_column(String(8), primary_key=True)
    predicted_class: Mapped[str] = mapped_column(String(8), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    output_tokens_true_sum: Mapped[int] = mapped_column(BigInteger)
    output_tokens_predicted_sum: Mapped[int] = mapped_column(BigInteger)
