"""Window loads: arrivals, rate and token sums per (model, class, window), computed in SQL from the
request log with the class rule of :mod:`dynamo_pipeline.classify`.

:func:`refresh_window_loads` replaces the windows that overlap a time span in one transaction
(delete, then INSERT … SELECT … GROUP BY), so the table always equals an aggregate of `requests`.
Windows with no row for a class inside an ingested span are true zeros; windows outside every
ingested span are missing data (see :func:`covered_spans`).
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import text

from dynamo_pipeline.classify import class_case_sql
from dynamo_pipeline.config import Settings
from dynamo_pipeline.store.db import Store


def refresh_window_loads(store: Store, settings: Settings, first_us: int, last_us: int) -> int:
    """Recompute the windows covering [first_us, last_us]; returns the number of window rows written."""
    w = settings.window_s
    lo = (first_us // 1_000_000 // w) * w
    hi = (last_us // 1_000_000 // w) * w
    cls = class_case_sql(settings.classes)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM window_loads WHERE window_s = :w AND window_start_s BETWEEN :lo AND :hi"),
                     dict(w=w, lo=lo, hi=hi))
        res = conn.execute(text(f"""
            INSERT INTO window_loads (model, class_name, window_s, window_start_s, arrivals, rate_rps,
                                      input_tokens_sum, output_tokens_sum)
            SELECT model, cls, :w, ws, COUNT(*), COUNT(*) * 1.0 / :w, SUM(input_tokens), SUM(output_tokens)
            FROM (SELECT model, {cls} AS cls, (arrived_at_us / 1000000 / :w) * :w AS ws, input_tokens, output_tokens
                  FROM requests WHERE arrived_at_us >= :lo_us AND arrived_at_us < :hi_us) AS r
            GROUP BY model, cls, ws
        """), dict(w=w, lo_us=lo * 1_000_000, hi_us=(hi + w) * 1_000_000))
        return res.rowcount


def window_loads(store: Store, window_s: int, model: str | None = None, since_s: int | None = None,
                 until_s: int | None = None) -> pd.DataFrame:
    """Window loads as a DataFrame (columns as the table, plus ``window_start`` as a UTC timestamp)."""
    q = "SELECT * FROM window_loads WHERE window_s = :w"
    p: dict = dict(w=window_s)
    if model:
        q += " AND model = :m"
        p["m"] = model
    if since_s is not None:
        q += " AND window_start_s >= :a"
        p["a"] = since_s
    if until_s is not None:
        q += " AND window_start_s < :b"
        p["b"] = until_s
    q += " ORDER BY model, window_start_s, class_name"
    with store.engine.connect() as conn:
        df = pd.read_sql(text(q), conn, params=p)
    df["window_start"] = pd.to_datetime(df["window_start_s"], unit="s", utc=True)
    return df


def covered_spans(store: Store) -> pd.DataFrame:
    """Time spans (µs) that complete ingest runs covered: windows inside them are observed."""
    with store.engine.connect() as conn:
        return pd.read_sql(text(
            "SELECT source, first_arrival_us, last_arrival_us FROM ingest_runs "
            "WHERE status = 'complete' AND first_arrival_us IS NOT NULL ORDER BY first_arrival_us"), conn)


def pivot_loads(df: pd.DataFrame, value: str = "arrivals") -> pd.DataFrame:
    """Windows × classes table (zeros where a class had no arrivals in an observed window)."""
    if df.empty:
        return df
    return df.pivot_table(index=["model", "window_start"], columns="class_name", values=value,
                          aggfunc="sum", fill_value=0)
