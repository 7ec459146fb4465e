"""ServeGen reader: 14 days of Alibaba production load → per-class window loads.

ServeGen (Xiang et al., arXiv:2505.09999; Apache-2.0) gives, per client and 10-minute window, a
request rate and the coefficient of variation of inter-arrival times, and per client and 6-hour
window the distribution of input and output tokens (here as mean/p50/p90/p99). It has no individual
requests, so the class split is modelled: each (client, 6-hour) token distribution is taken as
log-normal (median = p50, spread from p90/p50), input and output independent, which gives the share
of the client's rate in each of the nine classes and the expected token sums. Summing over clients
gives per-class rates per 10-minute window; at a finer grain (5 min) each 10-minute rate holds for
both halves, at a coarser one rates are averaged.

The output has the columns of :func:`dynamo_pipeline.ingest.windows.window_loads` (model,
class_name, window_s, window_start_s, arrivals, rate_rps, input_tokens_sum, output_tokens_sum,
window_start) plus ``cv`` (rate-weighted inter-arrival CV), so the forecaster and the request
generator (:mod:`.generator`) take it like loads derived from a request log. Every window of the
14 days is present for every class (a zero is an observed zero: ServeGen writes zero rows).

Two layouts are read: the raw snapshot (``language/<model>/chunk-<client>-trace.csv`` plus
``derived/servegen_client_token_stats_6h.csv``) and the bundled sample
(``samples/servegen/client_rates_10min.csv.gz`` + ``client_token_stats_6h.csv.gz``: the m-small
and m-large rates and CVs of every non-zero client window, same numbers to 5 significant digits).
ServeGen's times are relative; ``start`` anchors them (default Monday 2024-01-01 00:00 UTC).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtr

from dynamo_pipeline.config import BIN_LETTERS, ClassesConfig

SOURCE_WINDOW_S = 600
STATS_WINDOW_S = 21_600
DEFAULT_START = "2024-01-01T00:00:00Z"
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "samples" / "servegen"
SHARED_DIR = next((p / "shared" / "data" / "servegen" for p in Path(__file__).resolve().parents
                   if (p / "shared" / "data" / "servegen").is_dir()), SAMPLE_DIR)
_Z90 = 1.2815515655446004


class ServeGenError(ValueError):
    """The ServeGen data asked for is not where it was looked for; the message says where to get it."""


def default_root() -> Path:
    """The full snapshot (../shared/data/servegen) when present, else the bundled sample."""
    return SHARED_DIR if (SHARED_DIR / "language").is_dir() else SAMPLE_DIR


def read_client_rates(root: str | Path, model: str) -> pd.DataFrame:
    """Per-client 10-minute rates: columns client_id, window_start_s (relative), rate_rps, cv."""
    root = Path(root)
    raw = root / "language" / model
    if raw.is_dir():
        frames = []
        for f in sorted(raw.glob("chunk-*-trace.csv")):
            d = pd.read_csv(f, header=None, usecols=[0, 1, 2], names=["window_start_s", "rate_rps", "cv"])
            d = d[d.rate_rps > 0]
            d.insert(0, "client_id", int(f.name.split("-")[1]))
            frames.append(d)
        if not frames:
            raise ServeGenError(f"{raw}: no chunk-*-trace.csv files")
        df = pd.concat(frames, ignore_index=True)
    else:
        f = root / "client_rates_10min.csv.gz"
        if not f.exists():
            raise ServeGenError(f"{root}: neither language/{model}/ (raw ServeGen) nor client_rates_10min.csv.gz "
                                f"(the bundled sample, samples/servegen/) is there")
        df = pd.read_csv(f)
        df = df[df.model == model].drop(columns="model")
        if df.empty:
            raise ServeGenError(f"{f}: no rows for model {model!r}; the sample holds m-small and m-large")
    df["cv"] = df["cv"].fillna(1.0)
    return df.reset_index(drop=True)


def read_token_stats(root: str | Path, model: str) -> pd.DataFrame:
    """Per (client, 6-hour window) token statistics: client_id, window_start_s, input/output p50, p90, mean."""
    root = Path(root)
    for f in (root / "derived" / "servegen_client_token_stats_6h.csv", root / "client_token_stats_6h.csv.gz"):
        if f.exists():
            df = pd.read_csv(f)
            df = df[df.model == model].drop(columns="model")
            if df.empty:
                raise ServeGenError(f"{f}: no token statistics for model {model!r}")
            return df.reset_index(drop=True)
    raise ServeGenError(f"{root}: no token statistics file (derived/servegen_client_token_stats_6h.csv)")


def _lognormal(p50: np.ndarray, p90: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p50 = np.maximum(p50, 1.0)
    mu = np.log(p50)
    sigma = np.maximum(np.log(np.maximum(p90, p50) / p50) / _Z90, 0.05)
    return mu, sigma


def _bin_shares(mu: np.ndarray, sigma: np.ndarray, bins: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """P(bin) and E[tokens · 1{bin}] for the three bins of a log-normal, one row per distribution."""
    edges = np.log(np.asarray(bins, dtype=float))
    cdf = ndtr((edges[None, :] - mu[:, None]) / sigma[:, None])
    p = np.diff(np.c_[np.zeros(len(mu)), cdf, np.ones(len(mu))], axis=1)
    mean = np.exp(mu + sigma**2 / 2)
    cdf2 = ndtr((edges[None, :] - mu[:, None] - sigma[:, None] ** 2) / sigma[:, None])
    partial = mean[:, None] * np.diff(np.c_[np.zeros(len(mu)), cdf2, np.ones(len(mu))], axis=1)
    return p, partial


def _stats_for_clients(rates: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """Token stats per rate row: the client's own 6-hour row, else the model-wide median of that 6-hour
    window, else the model-wide median."""
    cols = ["input_tokens_p50", "input_tokens_p90", "output_tokens_p50", "output_tokens_p90"]
    r = rates.assign(stats_start_s=(rates.window_start_s // STATS_WINDOW_S) * STATS_WINDOW_S)
    own = stats.rename(columns={"window_start_s": "stats_start_s"})[["client_id", "stats_start_s", *cols]]
    r = r.merge(own, on=["client_id", "stats_start_s"], how="left")
    per_window = stats.groupby("window_start_s")[cols].median().rename_axis("stats_start_s").reset_index()
    fill = r[["stats_start_s"]].merge(per_window, on="stats_start_s", how="left")
    overall = stats[cols].median()
    for c in cols:
        r[c] = r[c].fillna(pd.Series(fill[c].to_numpy(), index=r.index)).fillna(overall[c])
    return r


def servegen_window_loads(model: str, window_s: int = 300, classes: ClassesConfig | None = None,
                          root: str | Path | None = None, start: str = DEFAULT_START,
                          days: float | None = None) -> pd.DataFrame:
    """Per-class window loads of one ServeGen model (``m-small``, ``m-large``) at ``window_s``.

    ``days`` keeps only the first that many days. ``window_s`` must divide 600 or be a multiple of it.
    """
    classes = classes or ClassesConfig()
    if SOURCE_WINDOW_S % window_s and window_s % SOURCE_WINDOW_S:
        raise ServeGenError(f"window_s={window_s}: ServeGen has 600 s windows; use a divisor or a multiple of 600")
    root = Path(root) if root is not None else default_root()
    rates = read_client_rates(root, model)
    if days is not None:
        rates = rates[rates.window_start_s < days * 86_400]
    r = _stats_for_clients(rates, read_token_stats(root, model))
    pin, ein = _bin_shares(*_lognormal(r.input_tokens_p50.to_numpy(), r.input_tokens_p90.to_numpy()),
                           classes.input_bins_tokens)
    pout, eout = _bin_shares(*_lognormal(r.output_tokens_p50.to_numpy(), r.output_tokens_p90.to_numpy()),
                             classes.output_bins_tokens)
    rate = r.rate_rps.to_numpy()
    cv = r.cv.to_numpy()
    parts = []
    for i, a in enumerate(BIN_LETTERS):
        for o, b in enumerate(BIN_LETTERS):
            share = pin[:, i] * pout[:, o]
            parts.append(pd.DataFrame({
                "window_start_s": r.window_start_s.to_numpy(), "class_name": a + b,
                "rate_rps": rate * share, "cv_w": rate * share * cv,
                "in_tok_rps": rate * ein[:, i] * pout[:, o], "out_tok_rps": rate * pin[:, i] * eout[:, o]}))
    g = pd.concat(parts).groupby(["window_start_s", "class_name"], as_index=False).sum()
    # every 10-minute window of the span and every class: zeros are observed zeros
    last = int(rates.window_start_s.max()) if days is None else int(days * 86_400) - SOURCE_WINDOW_S
    grid = pd.MultiIndex.from_product([np.arange(0, last + 1, SOURCE_WINDOW_S), classes.names()],
                                      names=["window_start_s", "class_name"])
    g = g.set_index(["window_start_s", "class_name"]).reindex(grid, fill_value=0.0).reset_index()
    g["cv"] = np.where(g.rate_rps > 0, g.cv_w / g.rate_rps.where(g.rate_rps > 0, 1), 1.0)
    g = _regrid(g, window_s)
    t0 = int(pd.Timestamp(start).timestamp())
    out = pd.DataFrame({
        "model": model, "class_name": g.class_name, "window_s": window_s,
        "window_start_s": g.window_start_s.astype(np.int64) + t0,
        "arrivals": np.rint(g.rate_rps * window_s).astype(np.int64), "rate_rps": g.rate_rps,
        "input_tokens_sum": np.rint(g.in_tok_rps * window_s).astype(np.int64),
        "output_tokens_sum": np.rint(g.out_tok_rps * window_s).astype(np.int64), "cv": g.cv})
    out["window_start"] = pd.to_datetime(out.window_start_s, unit="s", utc=True)
    return out.sort_values(["window_start_s", "class_name"]).reset_index(drop=True)


def _regrid(g: pd.DataFrame, window_s: int) -> pd.DataFrame:
    if window_s == SOURCE_WINDOW_S:
        return g
    if window_s < SOURCE_WINDOW_S:  # the 10-minute rate holds in each sub-window
        k = SOURCE_WINDOW_S // window_s
        rep = g.loc[g.index.repeat(k)].copy()
        rep["window_start_s"] = rep.window_start_s + np.tile(np.arange(k) * window_s, len(g))
        return rep.reset_index(drop=True)
    g = g.assign(window_start_s=(g.window_start_s // window_s) * window_s)
    k = window_s // SOURCE_WINDOW_S
    agg = g.groupby(["window_start_s", "class_name"], as_index=False).sum()
    for c in ("rate_rps", "cv_w", "in_tok_rps", "out_tok_rps"):
        agg[c] = agg[c] / k
    agg["cv"] = np.where(agg.rate_rps > 0, agg.cv_w / agg.rate_rps.where(agg.rate_rps > 0, 1), 1.0)
    return agg
