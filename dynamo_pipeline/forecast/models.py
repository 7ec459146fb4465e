"""Forecasters behind one interface, and the registry that config picks them from by name.

A forecaster is fitted on one rate series (requests/s, indexed by window start in seconds, NaN for
missing windows) and then predicts the point rate at given window starts from the history known at
the forecast origin. Registered names:

- ``prophet``: Prophet with daily and weekly seasonality (and the configured holidays);
- ``snaive_day`` / ``snaive_week``: seasonal-naive, the value at the same time one day / one week
  earlier (going back further periods over missing windows);
- ``last_value``: the latest observed window;
- ``ewma``: exponentially weighted mean of the history (half-life 3 windows).

``history_free`` forecasters (Prophet) predict from their fit alone, so a backtest predicts a whole
day in one call; ``self_correcting`` ones (last value, EWMA) already follow the latest windows and
get no intra-day correction. Upper quantiles are not the forecasters' business: they are calibrated
on held-out residuals in :mod:`.core`, the same way for all of them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pandas as pd

DAY_S = 86_400
WEEK_S = 7 * DAY_S


class ForecastError(ValueError):
    """A forecast cannot be made as asked; the message says what to change."""


class Forecaster:
    """Base class. Subclasses set ``name`` and implement :meth:`fit` and :meth:`predict`."""

    name: ClassVar[str] = ""
    history_free: ClassVar[bool] = False
    self_correcting: ClassVar[bool] = False
    #: the shortest history (seconds) for which the method is meaningful
    min_history_s: ClassVar[int] = 0

    def __init__(self, **params) -> None:
        self.params = params

    @property
    def version(self) -> str:
        return self.name

    def fit(self, y: pd.Series, window_s: int) -> "Forecaster":
        self.window_s = window_s
        return self

    def predict(self, history: pd.Series, starts_s: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


_REGISTRY: dict[str, type[Forecaster]] = {}


def register_forecaster(cls: type[Forecaster]) -> type[Forecaster]:
    _REGISTRY[cls.name] = cls
    return cls


def forecaster_names() -> list[str]:
    """Registered names, plus ``auto`` (per-series choice among baselines, see core.fit_series)."""
    return sorted([*_REGISTRY, "auto"])


def get_forecaster(name: str, **params) -> Forecaster:
    """A new, unfitted forecaster by registered name (``forecast.forecaster`` in the settings)."""
    if name == "auto":
        raise ForecastError("`auto` is a choice among forecasters made per series by "
                            "dynamo_pipeline.forecast.fit_series, not a forecaster to instantiate")
    try:
        return _REGISTRY[name](**params)
    except KeyError:
        raise ForecastError(f"unknown forecaster {name!r}; known: {', '.join(forecaster_names())} "
                            "(set forecast.forecaster in your config)") from None


def _last_observed(history: pd.Series) -> float:
    h = history.dropna()
    return float(h.iloc[-1]) if len(h) else 0.0


class _SeasonalNaive(Forecaster):
    period_s: ClassVar[int] = DAY_S
    max_periods: ClassVar[int] = 4

    def predict(self, history: pd.Series, starts_s: np.ndarray) -> np.ndarray:
        starts_s = np.asarray(starts_s, dtype=np.int64)
        last_s = int(history.index[-1]) if len(history) else -1
        out = np.full(len(starts_s), np.nan)
        for k in range(1, self.max_periods + 1):
            back = starts_s - k * self.period_s
            v = history.reindex(back).to_numpy(float, copy=True)
            v[back > last_s] = np.nan
            out = np.where(np.isnan(out), v, out)
        return np.where(np.isnan(out), _last_observed(history), out)


@register_forecaster
class SeasonalNaiveDay(_SeasonalNaive):
    name = "snaive_day"
    period_s = DAY_S
    min_history_s = DAY_S


@register_forecaster
class SeasonalNaiveWeek(_SeasonalNaive):
    name = "snaive_week"
    period_s = WEEK_S
    max_periods = 2
    min_history_s = WEEK_S


@register_forecaster
class LastValue(Forecaster):
    name = "last_value"
    self_correcting = True

    def predict(self, history: pd.Series, starts_s: np.ndarray) -> np.ndarray:
        return np.full(len(starts_s), _last_observed(history))


@register_forecaster
class EWMA(Forecaster):
    name = "ewma"
    self_correcting = True

    @property
    def halflife_windows(self) -> float:
        return float(self.params.get("halflife_windows", 3.0))

    def predict(self, history: pd.Series, starts_s: np.ndarray) -> np.ndarray:
        h = history.dropna()
        level = float(h.iloc[-50 * int(self.halflife_windows) - 1:].ewm(halflife=self.halflife_windows).mean().iloc[-1]) \
            if len(h) else 0.0
        return np.full(len(starts_s), level)


@register_forecaster
class Ensemble(Forecaster):
    """Median of seasonal-naive (day), seasonal-naive (week) and last value, window by window: when
    one of the three is far off (a bursty client last week, a level shift since yesterday) the other
    two outvote it. Members that lack history (a week for ``snaive_week``) fall back as they do alone."""

    name = "ensemble"
    min_history_s = DAY_S
    members: ClassVar[tuple[str, ...]] = ("snaive_day", "snaive_week", "last_value")

    def fit(self, y: pd.Series, window_s: int) -> "Ensemble":
        self.window_s = window_s
        self._members = [get_forecaster(n).fit(y, window_s) for n in self.members]
        return self

    def predict(self, history: pd.Series, starts_s: np.ndarray) -> np.ndarray:
        return np.median([m.predict(history, starts_s) for m in self._members], axis=0)


def _quiet_prophet() -> None:
    from cmdstanpy.utils import get_logger  # sets cmdstanpy's logger to INFO on its first call

    get_logger().setLevel(logging.WARNING)
    for name in ("prophet", "prophet.plot", "prophet.forecaster", "cmdstanpy"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.WARNING if name != "prophet.plot" else logging.CRITICAL)


@register_forecaster
class ProphetForecaster(Forecaster):
    """Prophet (daily + weekly seasonality, optional holidays) on log(1 + rate): additive on the log
    scale is multiplicative seasonality on the rate, and the forecast can never go negative."""

    name = "prophet"
    history_free = True
    min_history_s = 2 * DAY_S

    @property
    def version(self) -> str:
        import prophet

        return f"prophet-{prophet.__version__}"

    def fit(self, y: pd.Series, window_s: int) -> "ProphetForecaster":
        logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)  # "Importing plotly failed" on import
        from prophet import Prophet

        _quiet_prophet()  # after the import: cmdstanpy sets its logger up when imported

        self.window_s = window_s
        d = y.dropna()
        if len(d) < 2:
            raise ForecastError("Prophet needs at least 2 observed windows; use a baseline for short histories")
        holidays = None
        if self.params.get("holidays"):
            holidays = pd.DataFrame({"holiday": "holiday", "ds": pd.to_datetime(list(self.params["holidays"])),
                                     "lower_window": 0, "upper_window": 0})
        self.model = Prophet(daily_seasonality=True, weekly_seasonality=(y.index[-1] - y.index[0]) >= WEEK_S,
                             yearly_seasonality=False, holidays=holidays, uncertainty_samples=0)
        df = pd.DataFrame({"ds": pd.to_datetime(d.index.to_numpy(), unit="s"), "y": np.log1p(d.to_numpy(float))})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model.fit(df)
        return self

    def predict(self, history: pd.Series, starts_s: np.ndarray) -> np.ndarray:
        ds = pd.DataFrame({"ds": pd.to_datetime(np.asarray(starts_s, dtype=np.int64), unit="s")})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yhat = self.model.predict(ds)["yhat"].to_numpy(float)
        return np.maximum(np.expm1(yhat), 0.0)


Factory = Callable[..., Forecaster]
__all__ = ["Forecaster", "ForecastError", "forecaster_names", "get_forecaster", "register_forecaster"]
