"""PNG plots of forecasts against actual load (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_forecast(fc: pd.DataFrame, actual: pd.DataFrame | None, path: str | Path, classes: list[str] | None = None,
                  history_s: int = 2 * 86_400) -> Path:
    """One panel per class: actual rate (the last ``history_s`` before the forecast and during it),
    point forecast and upper quantile. ``fc``: forecast_loads/load_forecast rows; ``actual``: window
    loads. Returns the path written."""
    path = Path(path)
    classes = classes or sorted(fc.class_name.unique())
    n = len(classes)
    fig, axes = plt.subplots(n, 1, figsize=(11, 1.9 * n + 0.6), sharex=True, squeeze=False)
    lo = int(fc.window_start_s.min()) - history_s
    hi = int(fc.window_start_s.max())
    for ax, c in zip(axes[:, 0], classes):
        f = fc[fc.class_name == c]
        if actual is not None and not actual.empty:
            a = actual[(actual.class_name == c) & actual.window_start_s.between(lo, hi)]
            ax.plot(pd.to_datetime(a.window_start_s, unit="s"), a.rate_rps, color="0.3", lw=0.8, label="actual")
        t = pd.to_datetime(f.window_start_s, unit="s")
        ax.plot(t, f.rate_rps, color="tab:blue", lw=1.2, label="forecast")
        ax.fill_between(t, f.rate_rps, f.upper_rps, color="tab:blue", alpha=0.2,
                        label=f"upper q{float(f.upper_quantile.iloc[0]) if 'upper_quantile' in f else '':g}")
        ax.set_ylabel(f"{c}\nreq/s", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(loc="upper left", fontsize=7, ncol=3)
    first = fc.iloc[0]
    fig.suptitle(f"{first.model}: {first.get('horizon', '')} forecast ({first.get('forecaster', '')}) vs actual",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
