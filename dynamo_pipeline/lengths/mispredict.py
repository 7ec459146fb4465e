"""Misprediction accounting: per window, how many requests the length predictor put in a class
other than their true one, so reports and the simulator can show what prediction error costs.

The router knows a request's input length, so the predicted class is (true input bin, predicted
output bin); the true class uses the logged output tokens. :func:`misprediction_counts` gives, per
(model, window, true class, predicted class), the requests and their true and predicted output
tokens (correct cells included, so every window's total equals its arrivals);
:func:`misprediction_summary` reduces that to mispredicted requests per window;
:func:`record_mispredictions` stores the counts for a predictor version (re-recording replaces).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import delete, insert, text

from dynamo_pipeline.classify import bin_index
from dynamo_pipeline.config import BIN_LETTERS, ClassesConfig
from dynamo_pipeline.store.db import Store
from dynamo_pipeline.store.tables.forecast import Misprediction

_L = np.asarray(BIN_LETTERS)


def misprediction_counts(requests: pd.DataFrame, predicted_output_tokens: np.ndarray | pd.Series | None,
                         classes: ClassesConfig, window_s: int, predicted_output_class: np.ndarray | None = None
                         ) -> pd.DataFrame:
    """Counts per (model, window_start_s, true_class, predicted_class). ``requests`` needs
    arrived_at_us, input_tokens, output_tokens (and model); give the prediction as output tokens or
    as output class letters (``predicted_output_class``, which wins when both are given)."""
    inp = bin_index(requests["input_tokens"].to_numpy(), classes.input_bins_tokens)
    out = bin_index(requests["output_tokens"].to_numpy(), classes.output_bins_tokens)
    if predicted_output_class is not None:
        pout = pd.Series(np.asarray(predicted_output_class)).map({b: i for i, b in enumerate(BIN_LETTERS)})
        if pout.isna().any():
            raise ValueError(f"predicted output classes must be {', '.join(BIN_LETTERS)}")
        pout = pout.to_numpy(int)
        est = np.full(len(requests), np.nan) if predicted_output_tokens is None else np.asarray(predicted_output_tokens, float)
    elif predicted_output_tokens is not None:
        est = np.asarray(predicted_output_tokens, float)
        pout = bin_index(est, classes.output_bins_tokens)
    else:
        raise ValueError("give predicted_output_tokens or predicted_output_class")
    df = pd.DataFrame({
        "model": requests["model"].to_numpy() if "model" in requests.columns else "",
        "window_start_s": (requests["arrived_at_us"].to_numpy(np.int64) // 1_000_000 // window_s) * window_s,
        "true_class": np.char.add(_L[inp], _L[out]), "predicted_class": np.char.add(_L[inp], _L[pout]),
        "output_tokens_true_sum": requests["output_tokens"].to_numpy(np.int64),
        "output_tokens_predicted_sum": np.nan_to_num(est, nan=0.0).astype(np.int64), "requests": 1})
    g = df.groupby(["model", "window_start_s", "true_class", "predicted_class"], as_index=False).sum()
    g.insert(2, "window_s", window_s)
    return g


def misprediction_summary(counts: pd.DataFrame) -> pd.DataFrame:
    """Per (model, window): requests, mispredicted requests and their share, and under-predicted ones
    (predicted output bin shorter than the true one: the costly kind, SLO-wise)."""
    c = counts.assign(wrong=np.where(counts.true_class != counts.predicted_class, counts.requests, 0),
                      under=np.where(counts.predicted_class.str[1].map(BIN_LETTERS.index)
                                     < counts.true_class.str[1].map(BIN_LETTERS.index), counts.requests, 0))
    s = c.groupby(["model", "window_s", "window_start_s"], as_index=False)[["requests", "wrong", "under"]].sum()
    s = s.rename(columns={"wrong": "mispredicted", "under": "under_predicted"})
    s["mispredicted_share"] = s.mispredicted / s.requests
    return s


def record_mispredictions(store: Store, counts: pd.DataFrame, length_model_version: str) -> int:
    """Store counts for a predictor version, replacing that version's rows in the same windows."""
    if counts.empty:
        return 0
    rows = counts.assign(length_model_version=length_model_version)
    with store.engine.begin() as conn:
        for (model, w), g in rows.groupby(["model", "window_s"]):
            conn.execute(delete(Misprediction).where(
                Misprediction.length_model_version == length_model_version, Misprediction.model == model,
                Misprediction.window_s == int(w),
                Misprediction.window_start_s.between(int(g.window_start_s.min()), int(g.window_start_s.max()))))
        recs = rows[["length_model_version", "model", "window_s", "window_start_s", "true_class", "predicted_class",
                     "requests", "output_tokens_true_sum", "output_tokens_predicted_sum"]].to_dict("records")
        conn.execute(insert(Misprediction), [{k: (int(v) if isinstance(v, np.integer) else v) for k, v in r.items()}
                                             for r in recs])
    return len(rows)


def load_mispredictions(store: Store, length_model_version: str | None = None) -> pd.DataFrame:
    q = "SELECT * FROM mispredictions" + (" WHERE length_model_version = :v" if length_model_version else "")
    q += " ORDER BY model, window_start_s, true_class, predicted_class"
    with store.engine.connect() as conn:
        return pd.read_sql(text(q), conn, params={"v": length_model_version} if length_model_version else {})
