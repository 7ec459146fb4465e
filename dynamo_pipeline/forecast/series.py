"""Window loads → one regular rate series per (model, class), with gaps kept as gaps.

A window is *observed* when it lies in a span that ingestion covered (``covered_spans`` of
:mod:`dynamo_pipeline.ingest.windows`), or, when no spans are given, when any class of that model has
a row in it. In an observed window a class without a row had zero arrivals (a true zero); a window
that is not observed is missing (NaN) and never counted as a zero, neither in training nor in scoring.
:func:`clip_outliers` caps isolated spikes in training data (median + k·MAD over a day).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY_S = 86_400


def observed_mask(grid_s: np.ndarray, window_s: int, spans_us: pd.DataFrame | None,
                  present_s: np.ndarray) -> np.ndarray:
    """Which window starts of ``grid_s`` are observed (see the module docstring)."""
    if spans_us is None or spans_us.empty:
        return np.isin(grid_s, present_s)
    mask = np.zeros(len(grid_s), bool)
    for lo_us, hi_us in zip(spans_us.first_arrival_us, spans_us.last_arrival_us):
        lo, hi = lo_us // 1_000_000, hi_us // 1_000_000
        mask |= (grid_s + window_s > lo) & (grid_s <= hi)
    return mask


def class_series(loads: pd.DataFrame, window_s: int, spans_us: pd.DataFrame | None = None,
                 classes: list[str] | None = None, until_s: int | None = None) -> dict[tuple[str, str], pd.Series]:
    """Rate (requests/s) per (model, class) on a regular grid of ``window_s``, NaN where not observed.

    ``classes`` adds series (zeros where observed) for classes never seen; ``until_s`` extends the grid
    to that window start (exclusive), so a recent gap at the end shows as missing."""
    out: dict[tuple[str, str], pd.Series] = {}
    if loads.empty:
        return out
    loads = loads[loads.window_s == window_s] if "window_s" in loads.columns else loads
    for model, g in loads.groupby("model", sort=True):
        lo = int(g.window_start_s.min())
        hi = int(g.window_start_s.max())
        if until_s is not None:
            hi = max(hi, int(until_s) - window_s)
        grid = np.arange(lo, hi + 1, window_s, dtype=np.int64)
        obs = observed_mask(grid, window_s, spans_us, g.window_start_s.unique())
        wide = g.pivot_table(index="window_start_s", columns="class_name", values="rate_rps", aggfunc="sum")
        wide = wide.reindex(grid)
        names = sorted(set(wide.columns) | set(classes or []))
        for c in names:
            v = wide[c].to_numpy(float) if c in wide.columns else np.full(len(grid), np.nan)
            v = np.where(obs, np.nan_to_num(v, nan=0.0), np.nan)
            out[(str(model), str(c))] = pd.Series(v, index=pd.Index(grid, name="window_start_s"), name="rate_rps")
    return out


def clip_outliers(y: pd.Series, window_s: int, k_mad: float) -> tuple[pd.Series, int]:
    """Cap values above the 1-day rolling median + ``k_mad`` × 1.4826 × MAD; returns (series, count)."""
    if k_mad <= 0 or y.notna().sum() < 10:
        return y, 0
    n = max(3, DAY_S // window_s)
    med = y.rolling(n, min_periods=3, center=True).median()
    mad = (y - med).abs().rolling(n, min_periods=3, center=True).median()
    cap = med + k_mad * 1.4826 * mad
    over = (y > cap) & (mad > 0)
    return y.where(~over, cap), int(over.sum())
