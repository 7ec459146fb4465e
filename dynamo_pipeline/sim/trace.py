"""Request streams for the simulator: read from the store or a file, scale, and predict classes.

A trace is a DataFrame with one row per request, sorted by arrival: ``t_s`` (seconds since the
trace's start), ``input_tokens``, ``output_tokens``, ``cls`` (true class index into
``settings.classes.names()``) and ``pred_cls`` (the class the gateway routes by). ``start_s`` (Unix
seconds of t = 0) travels in ``df.attrs``.

Scaling (:func:`scale_trace`) raises a light trace to a fleet's load in one of two ways:
``superpose`` lays ``factor`` copies of the trace over each other, each shifted by a random offset
of up to ``max_shift_s`` seconds (wrapping around the end), so the hour keeps its shape and its
length; ``compress`` divides every arrival time by ``factor`` (the same requests in a shorter span).
A fractional factor takes a random subset of one more copy.

Predicted classes (:func:`predict_classes`): the input length is known when a request arrives, the
output length is not. With a trained output-length predictor (``predictor(df) -> tokens``), the
output bin comes from its prediction; without one, a configurable share ``error_rate`` of requests
get a neighbouring output bin at random (the share of mispredictions measured for the predictor).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import text

from dynamo_pipeline.classify import bin_index
from dynamo_pipeline.config import Settings
from dynamo_pipeline.store.db import Store

SCALE_METHODS = ("superpose", "compress")


class TraceError(ValueError):
    """A trace cannot be read or is empty; the message says where to look."""


def _frame(t_us: np.ndarray, inp: np.ndarray, out: np.ndarray, settings: Settings, source: str) -> pd.DataFrame:
    if t_us.size == 0:
        raise TraceError(f"no requests in {source}; ingest logs first (`dynamo ingest`) or widen the time span")
    order = np.argsort(t_us, kind="stable")
    t_us, inp, out = t_us[order], inp[order], out[order]
    start_us = int(t_us[0])
    df = pd.DataFrame({"t_s": (t_us - start_us) / 1e6, "input_tokens": inp.astype(np.int64),
                       "output_tokens": out.astype(np.int64)})
    df["cls"] = true_classes(df, settings)
    df["pred_cls"] = df["cls"]
    df.attrs.update(start_s=start_us / 1e6, source=source)
    return df


def true_classes(df: pd.DataFrame, settings: Settings) -> np.ndarray:
    """Class index (into ``settings.classes.names()``: input bin × 3 + output bin) of each request."""
    i = bin_index(df["input_tokens"].to_numpy(), settings.classes.input_bins_tokens)
    o = bin_index(df["output_tokens"].to_numpy(), settings.classes.output_bins_tokens)
    return (3 * i + o).astype(np.int8)


def load_trace(store: Store, settings: Settings, tenant: str | None = None, model: str | None = None,
               since_s: int | None = None, until_s: int | None = None) -> pd.DataFrame:
    """Requests from the store (optionally one tenant, model and time span) as a trace."""
    q, p = "SELECT arrived_at_us, input_tokens, output_tokens FROM requests WHERE 1=1", {}
    for col, val in (("tenant", tenant), ("model", model)):
        if val is not None:
            q += f" AND {col} = :{col}"
            p[col] = val
    if since_s is not None:
        q += " AND arrived_at_us >= :a"
        p["a"] = since_s * 1_000_000
    if until_s is not None:
        q += " AND arrived_at_us < :b"
        p["b"] = until_s * 1_000_000
    with store.engine.connect() as conn:
        rows = conn.execute(text(q), p).fetchall()
    a = np.array(rows, dtype=np.int64).reshape(-1, 3)
    what = "the store" + (f" for tenant {tenant!r}" if tenant else "") + (f", model {model!r}" if model else "")
    return _frame(a[:, 0], a[:, 1], a[:, 2], settings, what)


def trace_from_requests(requests: pd.DataFrame, settings: Settings, source: str = "requests") -> pd.DataFrame:
    """A trace from a request frame with ``arrived_at_us, input_tokens, output_tokens`` (the store's
    and the ServeGen-derived generator's columns)."""
    return _frame(requests["arrived_at_us"].to_numpy(np.int64), requests["input_tokens"].to_numpy(),
                  requests["output_tokens"].to_numpy(), settings, source)


def read_trace_file(path: str | Path, settings: Settings) -> pd.DataFrame:
    """A trace from an Azure-format CSV (``TIMESTAMP, ContextTokens, GeneratedTokens``, gzip ok) or a
    Parquet / CSV file with ``arrived_at`` (or ``t_s``), ``input_tokens`` and ``output_tokens``."""
    path = Path(path)
    if not path.exists():
        raise TraceError(f"trace file {path} does not exist")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= set(df.columns):
        t_us = _epoch_us(df["TIMESTAMP"])
        return _frame(t_us, df["ContextTokens"].to_numpy(), df["GeneratedTokens"].to_numpy(), settings, str(path))
    if {"input_tokens", "output_tokens"} <= set(df.columns) and ({"t_s"} & set(df.columns) or {"arrived_at"} & set(df.columns)):
        if "t_s" in df.columns:
            t_us = (df["t_s"].to_numpy(float) * 1e6).astype(np.int64)
        else:
            t_us = _epoch_us(df["arrived_at"])
        return _frame(t_us, df["input_tokens"].to_numpy(), df["output_tokens"].to_numpy(), settings, str(path))
    raise TraceError(f"{path}: columns {list(df.columns)[:8]} are neither the Azure trace's (TIMESTAMP, "
                     "ContextTokens, GeneratedTokens) nor t_s/arrived_at, input_tokens, output_tokens")


def _epoch_us(col: pd.Series) -> np.ndarray:
    t = pd.to_datetime(col, utc=True, format="ISO8601")
    return t.dt.as_unit("us").astype("int64").to_numpy()


def scale_trace(df: pd.DataFrame, factor: float, method: str = "superpose", max_shift_s: float = 120.0,
                seed: int = 0) -> pd.DataFrame:
    """The trace at ``factor`` times its arrival rate (see the module docstring for the methods)."""
    if factor <= 0:
        raise TraceError(f"scale factor must be > 0, got {factor}")
    if method not in SCALE_METHODS:
        raise TraceError(f"unknown scaling method {method!r}; use one of {SCALE_METHODS}")
    if method == "compress":
        out = df.copy()
        out["t_s"] = out["t_s"] / factor
        out.attrs.update(df.attrs, scale_factor=factor, scale_method=method)
        return out
    rng = np.random.default_rng(seed)
    span = float(df["t_s"].max()) + 1e-6
    parts = []
    whole, frac = int(np.floor(factor)), factor - np.floor(factor)
    for k in range(whole + (1 if frac > 1e-9 else 0)):
        part = df if k < whole else df[rng.random(len(df)) < frac]
        shift = 0.0 if k == 0 else rng.uniform(0, max_shift_s)
        p = part.copy()
        p["t_s"] = (p["t_s"].to_numpy() + shift) % span
        parts.append(p)
    out = pd.concat(parts, ignore_index=True).sort_values("t_s", kind="stable").reset_index(drop=True)
    out.attrs.update(df.attrs, scale_factor=factor, scale_method=method)
    return out


def predict_classes(df: pd.DataFrame, settings: Settings, error_rate: float = 0.0,
                    predictor: Callable[[pd.DataFrame], np.ndarray] | None = None, seed: int = 0) -> pd.DataFrame:
    """Set ``pred_cls``: from the predictor's output lengths when given, else the true class with a
    share ``error_rate`` of requests moved to a neighbouring output bin."""
    out = df.copy()
    i = bin_index(out["input_tokens"].to_numpy(), settings.classes.input_bins_tokens)
    if predictor is not None:
        o = bin_index(np.asarray(predictor(out)), settings.classes.output_bins_tokens)
        out["pred_cls"] = (3 * i + o).astype(np.int8)
        out.attrs["predictor"] = getattr(predictor, "__name__", type(predictor).__name__)
        return out
    if not 0 <= error_rate <= 1:
        raise TraceError(f"error_rate must be in [0, 1], got {error_rate}")
    rng = np.random.default_rng(seed)
    o = bin_index(out["output_tokens"].to_numpy(), settings.classes.output_bins_tokens)
    wrong = rng.random(len(out)) < error_rate
    step = np.where(rng.random(len(out)) < 0.5, -1, 1)
    step = np.where(o == 0, 1, np.where(o == 2, -1, step))
    o = np.where(wrong, o + step, o)
    out["pred_cls"] = (3 * i + o).astype(np.int8)
    out.attrs["error_rate"] = error_rate
    return out
