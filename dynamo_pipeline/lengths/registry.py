"""Trained predictors in the store (``length_models``): version, file, data and training metadata."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from sqlalchemy import insert, select, text

from dynamo_pipeline.lengths.model import LengthPredictor, LengthsError
from dynamo_pipeline.store.db import Store
from dynamo_pipeline.store.tables.forecast import LengthModel


def register_predictor(store: Store, pred: LengthPredictor, path: Path, accuracy: float | None = None) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(LengthModel).values(
            version=pred.version, created_at=datetime.now(timezone.utc), path=str(path),
            data=str(pred.metadata.get("data", "")), train_rows=int(pred.metadata.get("rows", 0)),
            output_bins_tokens=json.dumps(list(pred.output_bins)), accuracy=accuracy,
            metadata_json=json.dumps(pred.metadata, default=str)))


def list_predictors(store: Store) -> pd.DataFrame:
    with store.engine.connect() as conn:
        return pd.read_sql(text("SELECT version, created_at, data, train_rows, output_bins_tokens, accuracy, path "
                                "FROM length_models ORDER BY created_at"), conn)


def load_predictor(store: Store, version: str | None = None) -> LengthPredictor:
    """A registered predictor by version (default: the newest)."""
    q = select(LengthModel.path).order_by(LengthModel.created_at.desc()).limit(1)
    if version:
        q = select(LengthModel.path).where(LengthModel.version == version)
    with store.engine.connect() as conn:
        path = conn.execute(q).scalar()
    if path is None:
        raise LengthsError(f"no length predictor {version or ''} in the store; run `dynamo lengths train`")
    return LengthPredictor.load(path)
