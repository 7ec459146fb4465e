"""Fitting, forecasting at the two horizons, calibrated upper quantiles, and rolling-origin backtests.

Horizons (DESIGN §4): ``day_ahead`` forecasts every window of the next ``forecast.day_ahead_s`` from
one origin (the nightly plan); ``intraday`` forecasts the next ``forecast.intraday_s`` (30 min) from
origins every 30 minutes, and for forecasters that do not follow recent data themselves the points
are scaled by (observed / forecast) over the latest ``forecast.correction_windows`` windows.

Upper quantile: the same split-conformal rule for every forecaster. The last ``calibration_s`` of
the training history is held out (for forecasters that only read history — the baselines — every
day after a warm-up is out of sample and is used), the forecaster is fitted on the rest and run over
it at the same horizon, and the largest per-day ``upper_quantile`` (finite-sample corrected) of the
relative residuals (actual − point) / max(point, 5% of the mean rate) gives the margin; then the
forecaster is refitted on the whole history. ``upper_rps = point + margin · max(point, floor)``.

Short histories (fewer observed seconds than ``forecast.min_history_s`` or than the method needs)
fall back to ``forecast.fallback`` with a :class:`ShortHistoryWarning`; training values are cleaned
of spikes (:func:`.series.clip_outliers`); missing windows are skipped in training and scoring.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from dynamo_pipeline.config import ForecastConfig, Settings, load_settings
from dynamo_pipeline.forecast.models import Forecaster, ForecastError, get_forecaster
from dynamo_pipeline.forecast.series import DAY_S, class_series, clip_outliers

HORIZONS = ("day_ahead", "intraday")
#: relative residuals are taken against at least this share of the series' mean rate
FLOOR_SHARE = 0.05
#: upper margin (relative) when no held-out span was available to calibrate it
UNCALIBRATED_MARGIN = 0.5


class ShortHistoryWarning(UserWarning):
    """A series was too short for the configured forecaster; a baseline was used instead."""


def horizon_s(horizon: str, cfg: ForecastConfig) -> int:
    if horizon == "day_ahead":
        return cfg.day_ahead_s
    if horizon == "intraday":
        return cfg.intraday_s
    raise ForecastError(f"unknown horizon {horizon!r}; use one of {', '.join(HORIZONS)}")


def _observed_s(y: pd.Series, window_s: int) -> int:
    return int(y.notna().sum()) * window_s


def rolling_points(fc: Forecaster, y: pd.Series, start_s: int, end_s: int, horizon: str, cfg: ForecastConfig,
                   window_s: int) -> np.ndarray:
    """Point forecasts for the windows in [start_s, end_s) as they would have been made live: from
    origins every horizon (day-ahead) or every ``intraday_s`` (intra-day), each seeing ``y`` only
    before its origin, intra-day ones corrected by the latest observed windows."""
    step = horizon_s(horizon, cfg)
    k = cfg.correction_windows
    correct = horizon == "intraday" and not fc.self_correcting
    targets_all = np.arange(start_s, end_s, window_s, dtype=np.int64)
    out = np.empty(len(targets_all))
    base = None
    if fc.history_free:  # one call for the whole span (and the k windows before it)
        span = np.arange(start_s - k * window_s, end_s, window_s, dtype=np.int64)
        base = pd.Series(fc.predict(y.iloc[:0], span), index=span)
    for origin in range(start_s, end_s, step):
        targets = targets_all[(targets_all >= origin) & (targets_all < origin + step)]
        hist = y.loc[: origin - window_s]
        prior = np.arange(origin - k * window_s, origin, window_s, dtype=np.int64)
        if base is not None:
            p = base.reindex(np.concatenate([prior, targets])).to_numpy(float)
        else:
            p = fc.predict(hist, np.concatenate([prior, targets]) if correct else targets)
            if not correct:
                p = np.concatenate([np.full(k, np.nan), p])
        pp, pt = p[:k], p[k:]
        if correct:
            yo = y.reindex(prior).to_numpy(float)
            ok = ~np.isnan(yo) & ~np.isnan(pp)
            if ok.any():
                sp, so = pp[ok].sum(), yo[ok].sum()
                if sp > 1e-9:
                    pt = pt * min(max(so / sp, 0.25), 4.0)
                else:
                    pt = pt + (yo[ok] - pp[ok]).mean()
        out[(targets_all >= origin) & (targets_all < origin + step)] = np.maximum(pt, 0.0)
    return out


def _margin(actual: np.ndarray, point: np.ndarray, floor: float, q: float, per_day: int) -> float:
    """The largest, over the held-out days, of each day's finite-sample ``q`` quantile of relative
    residuals: load shifts from day to day, and one day's quantile alone under-covers the next."""
    margins = []
    for k in range(0, len(actual), per_day):
        a, p = actual[k:k + per_day], point[k:k + per_day]
        ok = ~np.isnan(a)
        r = (a[ok] - p[ok]) / np.maximum(p[ok], floor)
        if r.size:
            level = min(1.0, math.ceil((r.size + 1) * q) / r.size)
            margins.append(float(np.quantile(r, level, method="higher")))
    return max(max(margins), 0.0) if margins else UNCALIBRATED_MARGIN


#: what ``auto`` chooses from, per series and horizon, by error on the held-out span (Prophet is
#: left out: it costs two fits per series and never won a backtest on ServeGen, see README)
AUTO_CANDIDATES = ("snaive_day", "snaive_week", "last_value", "ewma", "ensemble")


@dataclass
class FittedSeries:
    """One (model, class) series, fitted: per horizon, the forecaster used and its calibrated margin."""

    model: str
    class_name: str
    window_s: int
    forecasters: dict[str, Forecaster]  # per horizon
    requested: str
    y: pd.Series  # training history (clipped), NaN = missing
    floor_rps: float
    margins: dict[str, float] = field(default_factory=dict)  # per horizon
    calibrated: bool = False
    outliers_clipped: int = 0
    fallback_reason: str = ""

    @property
    def train_start_s(self) -> int:
        return int(self.y.index[0])

    @property
    def train_end_s(self) -> int:
        return int(self.y.index[-1]) + self.window_s

    def points(self, y: pd.Series, start_s: int, end_s: int, horizon: str, cfg: ForecastConfig) -> tuple[np.ndarray, np.ndarray]:
        """(point, upper) for the windows in [start_s, end_s) made live from ``y`` (see rolling_points)."""
        p = rolling_points(self.forecasters[horizon], y, start_s, end_s, horizon, cfg, self.window_s)
        m = self.margins.get(horizon, UNCALIBRATED_MARGIN)
        return p, p + m * np.maximum(p, self.floor_rps)

    def forecast(self, origin_s: int, horizon: str, cfg: ForecastConfig, recent: pd.Series | None = None) -> pd.DataFrame:
        """Point and upper rate per window of ``horizon`` from ``origin_s``; ``recent`` (observed windows
        after training, up to the origin) feeds the intra-day correction and the baselines."""
        y = self.y if recent is None else pd.concat([self.y, recent[recent.index > self.y.index[-1]]])
        end = origin_s + horizon_s(horizon, cfg)
        p, u = self.points(y, origin_s, end, horizon, cfg)
        return pd.DataFrame({"window_start_s": np.arange(origin_s, end, self.window_s, dtype=np.int64),
                             "rate_rps": p, "upper_rps": u})


def _wape(actual: np.ndarray, point: np.ndarray) -> float:
    ok = ~np.isnan(actual)
    return float(np.abs(actual[ok] - point[ok]).sum() / max(actual[ok].sum(), 1e-12)) if ok.any() else np.inf


def fit_series(y: pd.Series, window_s: int, cfg: ForecastConfig, name: str | None = None,
               model: str = "", class_name: str = "", horizons: tuple[str, ...] = HORIZONS) -> FittedSeries:
    """Fit one series (see the module docstring for fallback, outliers and calibration). ``name``
    ``auto`` picks, per horizon, the candidate of :data:`AUTO_CANDIDATES` with the lowest error
    (WAPE) on the held-out span."""
    name = name or cfg.forecaster
    candidates = list(AUTO_CANDIDATES) if name == "auto" else [name]
    params = {"holidays": cfg.holidays} if name == "prophet" else {}
    fallback_reason = ""
    observed = _observed_s(y, window_s)
    need = max([cfg.min_history_s] + [get_forecaster(c).min_history_s for c in candidates if c != "auto"])
    if name == "auto":
        need = max(cfg.min_history_s, get_forecaster("snaive_day").min_history_s)
        candidates = [c for c in candidates if get_forecaster(c).min_history_s + cfg.calibration_s <= observed] \
            or ["snaive_day"]
    if observed < need and name != cfg.fallback:
        fallback_reason = (f"{model}/{class_name}: {observed / 3600:.1f} h of observed history < {need / 3600:.1f} h "
                           f"needed by {name}; using {cfg.fallback}")
        warnings.warn(fallback_reason, ShortHistoryWarning, stacklevel=2)
        candidates, params = [cfg.fallback], {}
    yc, n_clip = clip_outliers(y, window_s, cfg.outlier_mad)
    mean = float(np.nanmean(yc.to_numpy(float))) if yc.notna().any() else 0.0
    floor = max(FLOOR_SHARE * mean, 1e-6)
    end = int(yc.index[-1]) + window_s
    cal_start = end - cfg.calibration_s
    if cfg.calibration_s > 0 and not any(get_forecaster(c, **params).history_free for c in candidates):
        # forecasters that only read history are out of sample on every day after their warm-up, so
        # every such day of the history calibrates them (more days: a margin that holds across days)
        warm = max(get_forecaster(c).min_history_s for c in candidates) + DAY_S
        start = int(yc.index[0]) + warm
        cal_start = min(cal_start, end - max((end - start) // DAY_S, 0) * DAY_S)
    head = yc.loc[: cal_start - window_s]
    chosen = {h: candidates[0] for h in horizons}
    margins: dict[str, float] = {}
    calibrated = False
    if cfg.calibration_s > 0 and _observed_s(head, window_s) >= max(get_forecaster(candidates[0]).min_history_s, 2 * window_s):
        actual = yc.loc[cal_start:].to_numpy(float)
        best: dict[str, tuple[float, float]] = {}
        for c in candidates:
            fc = get_forecaster(c, **params).fit(head, window_s)
            for h in horizons:
                p = rolling_points(fc, yc, cal_start, end, h, cfg, window_s)
                err = _wape(actual, p)
                if h not in best or err < best[h][0]:
                    best[h] = (err, _margin(actual, p, floor, cfg.upper_quantile, DAY_S // window_s))
                    chosen[h] = c
        margins = {h: best[h][1] for h in horizons}
        calibrated = True
    fitted_by_name = {c: get_forecaster(c, **params).fit(yc, window_s) for c in set(chosen.values())}
    return FittedSeries(model, class_name, window_s, {h: fitted_by_name[chosen[h]] for h in horizons}, name, yc,
                        floor, margins, calibrated, n_clip, fallback_reason)


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else load_settings()


def forecast_loads(loads: pd.DataFrame, settings: Settings | None = None, *, horizon: str = "day_ahead",
                   origin_s: int | None = None, forecaster: str | None = None,
                   spans_us: pd.DataFrame | None = None, progress: bool | None = False) -> pd.DataFrame:
    """Forecast per (model, class) rates for the windows of ``horizon`` after ``origin_s``.

    ``loads``: window loads (the frame of ``ingest.windows.window_loads`` or the ServeGen reader);
    only windows before ``origin_s`` (default: the end of the last window) train the forecaster.
    ``spans_us``: ingestion's ``covered_spans`` (missing vs zero); ``forecaster``: a registered name
    (default ``settings.forecast.forecaster``, ``intraday_forecaster`` for the intra-day horizon). Returns one row per (model, class_name, window) with
    ``rate_rps`` (point) and ``upper_rps`` (the calibrated upper quantile the planner provisions for),
    plus forecaster, model_version, horizon, origin_s, train_start_s, train_end_s, upper_quantile,
    calibrated and fallback (why a baseline replaced the configured forecaster, or "").
    """
    s = _settings(settings)
    cfg = s.forecast
    horizon_s(horizon, cfg)
    if loads.empty:
        raise ForecastError("no window loads to forecast from: ingest request logs first (`dynamo ingest`)")
    window_s = int(loads.window_s.iloc[0]) if "window_s" in loads.columns else s.window_s
    if origin_s is None:
        origin_s = int(loads.window_start_s.max()) + window_s
    if origin_s % window_s:
        raise ForecastError(f"origin {origin_s} is not on the {window_s} s window grid")
    series = class_series(loads[loads.window_start_s < origin_s], window_s, spans_us, s.classes.names(), origin_s)
    rows = []
    for (model, cls), y in tqdm(series.items(), desc=f"forecast {horizon}", disable=not progress, leave=False):
        name = forecaster or (cfg.intraday_forecaster if horizon == "intraday" else cfg.forecaster)
        f = fit_series(y, window_s, cfg, name, model, cls, horizons=(horizon,))
        out = f.forecast(origin_s, horizon, cfg)
        out.insert(0, "class_name", cls)
        out.insert(0, "model", model)
        out["forecaster"] = f.forecasters[horizon].name
        out["model_version"] = f.forecasters[horizon].version
        out["train_start_s"] = f.train_start_s
        out["train_end_s"] = f.train_end_s
        out["calibrated"] = f.calibrated
        out["fallback"] = f.fallback_reason
        rows.append(out)
    df = pd.concat(rows, ignore_index=True)
    df["window_s"] = window_s
    df["horizon"] = horizon
    df["origin_s"] = origin_s
    df["upper_quantile"] = cfg.upper_quantile
    df["window_start"] = pd.to_datetime(df.window_start_s, unit="s", utc=True)
    return df


# ---------------------------------------------------------------------------------------------- backtests

def backtest_series(y: pd.Series, window_s: int, cfg: ForecastConfig, name: str, test_days: int = 4,
                    model: str = "", class_name: str = "") -> pd.DataFrame:
    """Rolling-origin backtest of one series: for each of the last ``test_days`` days, fit on every
    window before that day, forecast the day at both horizons and keep (actual, point, upper)."""
    last = int(y.index[-1]) + window_s
    day0 = (last // DAY_S) * DAY_S if last % DAY_S else last
    frames = []
    for d in range(test_days, 0, -1):
        start = day0 - d * DAY_S
        train = y.loc[: start - window_s]
        if train.notna().sum() < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShortHistoryWarning)
            f = fit_series(train, window_s, cfg, name, model, class_name)
        actual = y.loc[start: start + DAY_S - window_s]
        for h in HORIZONS:
            p, u = f.points(pd.concat([f.y, actual]), start, start + DAY_S, h, cfg)
            frames.append(pd.DataFrame({
                "model": model, "class_name": class_name, "forecaster": name, "used": f.forecasters[h].name,
                "horizon": h, "window_start_s": actual.index.to_numpy(), "actual_rps": actual.to_numpy(float),
                "point_rps": p[: len(actual)], "upper_rps": u[: len(actual)]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def backtest_loads(loads: pd.DataFrame, settings: Settings | None = None, forecasters: list[str] | None = None,
                   test_days: int = 4, spans_us: pd.DataFrame | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Backtest every (model, class) series with each forecaster; the rows of :func:`backtest_series`."""
    s = _settings(settings)
    from dynamo_pipeline.forecast.models import forecaster_names

    names = forecasters or forecaster_names()
    window_s = int(loads.window_s.iloc[0])
    series = class_series(loads, window_s, spans_us, s.classes.names())
    jobs = [(k, n) for k in series for n in names]
    frames = [backtest_series(series[k], window_s, s.forecast, n, test_days, *k)
              for k, n in tqdm(jobs, desc="backtest", disable=(None if progress is None else not progress), leave=False)]
    return pd.concat([f for f in frames if not f.empty], ignore_index=True)


def score(detail: pd.DataFrame, q: float, by: tuple[str, ...] = ("model", "forecaster", "horizon")) -> pd.DataFrame:
    """Metrics per group, missing actuals skipped. Per class first, then combined over the group's
    classes weighted by each class's share of the actual requests (a class of 0.05 requests/s weighs
    what it costs the planner): MAPE (%, over windows with actual > 0), sMAPE (%), pinball loss of
    the upper quantile at ``q`` (% of the mean actual rate). Coverage (share of windows with
    actual ≤ upper) is pooled over all windows of the group, unweighted."""
    d = detail.dropna(subset=["actual_rps"])
    per = []
    for key, g in d.groupby([*by, "class_name"], sort=True):
        a, p, u = g.actual_rps.to_numpy(), g.point_rps.to_numpy(), g.upper_rps.to_numpy()
        pos = a > 0
        den = np.abs(a) + np.abs(p)
        smape = np.where(den > 0, 2 * np.abs(a - p) / np.where(den > 0, den, 1), 0.0)
        diff = a - u
        pin = np.maximum(q * diff, (q - 1) * diff)
        per.append(dict(zip([*by, "class_name"], key)) | {
            "windows": int(len(g)), "weight": float(a.sum()), "covered": int(np.sum(a <= u + 1e-12)),
            "mape_pct": float(100 * np.mean(np.abs(a[pos] - p[pos]) / a[pos])) if pos.any() else 0.0,
            "smape_pct": float(100 * smape.mean()), "pinball_sum": float(pin.sum())})
    per_df = pd.DataFrame(per)
    rows = []
    for key, g in per_df.groupby(list(by), sort=True):
        w = g.weight.to_numpy() / max(g.weight.sum(), 1e-12)
        rows.append(dict(zip(by, key)) | {
            "windows": int(g.windows.sum()),
            "mape_pct": float(np.sum(w * g.mape_pct)), "smape_pct": float(np.sum(w * g.smape_pct)),
            "pinball_pct": float(100 * g.pinball_sum.sum() / max(g.weight.sum(), 1e-12)),
            "coverage": float(g.covered.sum() / g.windows.sum())})
    return pd.DataFrame(rows)
