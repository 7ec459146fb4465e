"""`dynamo forecast fit|backtest|show`: thin wrappers over :mod:`dynamo_pipeline.forecast`."""

from __future__ import annotations

import click
import pandas as pd

from dynamo_pipeline.cli import main
from dynamo_pipeline.cli.common import Context, fail, pass_ctx
from dynamo_pipeline.cli.common import parse_time_s
from dynamo_pipeline.forecast import (
    HORIZONS,
    ForecastError,
    backtest_loads,
    forecast_loads,
    forecast_store,
    forecaster_names,
    load_forecast,
    save_backtest,
    save_forecast,
    score,
)
from dynamo_pipeline.ingest.windows import covered_spans, window_loads
from dynamo_pipeline.workload import ServeGenError, servegen_window_loads

_SERVEGEN_HELP = ("Use a ServeGen model's 14 days (m-small or m-large) instead of the store's window loads: "
                  "../shared/data/servegen when present, else the bundled samples/servegen.")


def _servegen(ctx: Context, model: str, root: str | None) -> pd.DataFrame:
    try:
        return servegen_window_loads(model, ctx.settings.window_s, ctx.settings.classes, root=root)
    except ServeGenError as e:
        fail(str(e))
        raise


@main.group(help="Per-class load forecasts (point and upper quantile) for the planner.\n\n"
                 f"Forecasters: {', '.join(forecaster_names())} (settings: forecast.forecaster for the "
                 "day-ahead plan, forecast.intraday_forecaster for the 30-minute horizon).")
def forecast() -> None:
    pass


@forecast.command("fit")
@click.option("--horizon", type=click.Choice(HORIZONS), default="day_ahead", show_default=True)
@click.option("--origin", help="Forecast origin (ISO 8601, UTC; on the window grid). Default: end of the data.")
@click.option("--model", help="Only this model.")
@click.option("--forecaster", type=click.Choice(forecaster_names()), help="Override the configured forecaster.")
@click.option("--servegen", "sg_model", help=_SERVEGEN_HELP)
@click.option("--servegen-root", type=click.Path(exists=True, file_okay=False), help="ServeGen folder.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG of the forecast against recent load.")
@pass_ctx
def forecast_fit(ctx: Context, horizon: str, origin: str | None, model: str | None, forecaster: str | None,
                 sg_model: str | None, servegen_root: str | None, plot: str | None) -> None:
    """Fit the forecaster on window loads before the origin and store the forecast for the horizon
    (run id, forecaster version and training window with every window's point and upper rate)."""
    store = ctx.store()
    try:
        if sg_model:
            loads = _servegen(ctx, sg_model, servegen_root)
            fc = forecast_loads(loads, ctx.settings, horizon=horizon, origin_s=parse_time_s(origin), forecaster=forecaster)
            run_id = save_forecast(store, fc, f"servegen:{sg_model}", forecaster)
        else:
            fc, run_id = forecast_store(store, ctx.settings, horizon=horizon, origin_s=parse_time_s(origin), model=model,
                                        forecaster=forecaster)
            loads = window_loads(store, ctx.settings.window_s, model=model)
    except ForecastError as e:
        fail(str(e))
        return
    summary = fc.groupby(["model", "class_name"]).agg(forecaster=("forecaster", "first"), mean_rps=("rate_rps", "mean"),
                                                      peak_upper_rps=("upper_rps", "max"))
    click.echo(f"forecast run {run_id}: {horizon} from {pd.Timestamp(int(fc.origin_s.iloc[0]), unit='s', tz='UTC')}, "
               f"{fc.window_start_s.nunique()} windows × {len(summary)} series")
    click.echo(summary.to_string(float_format=lambda x: f"{x:.3f}"))
    for why in sorted(set(fc.fallback) - {""}):
        click.secho(f"warning: {why}", fg="yellow", err=True)
    if plot:
        from dynamo_pipeline.forecast.plot import plot_forecast

        for m, g in fc.groupby("model"):
            p = plot if fc.model.nunique() == 1 else plot.replace(".png", f"-{m}.png")
            click.echo(f"plot: {plot_forecast(g, loads[loads.model == m], p)}")


@forecast.command("backtest")
@click.option("--forecasters", default=",".join(forecaster_names()), show_default=True,
              help="Comma-separated names to compare.")
@click.option("--test-days", default=4, show_default=True, help="Rolling origins: one per test day at the end.")
@click.option("--servegen", "sg_model", help=_SERVEGEN_HELP)
@click.option("--servegen-root", type=click.Path(exists=True, file_okay=False), help="ServeGen folder.")
@click.option("--model", help="Only this model (store data).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write per-window results as CSV.")
@click.option("--progress/--no-progress", default=None)
@pass_ctx
def forecast_backtest(ctx: Context, forecasters: str, test_days: int, sg_model: str | None, servegen_root: str | None,
                      model: str | None, csv_path: str | None, progress: bool | None) -> None:
    """Rolling-origin backtest at the day-ahead and 30-minute horizons: MAPE, sMAPE, pinball loss of
    the upper quantile and its coverage, per forecaster (stored in forecast_backtests)."""
    names = [n.strip() for n in forecasters.split(",") if n.strip()]
    bad = set(names) - set(forecaster_names())
    if bad:
        fail(f"unknown forecasters {sorted(bad)}; known: {', '.join(forecaster_names())}")
    store = ctx.store()
    if sg_model:
        loads, spans, source = _servegen(ctx, sg_model, servegen_root), None, f"servegen:{sg_model}"
    else:
        loads, spans, source = window_loads(store, ctx.settings.window_s, model=model), covered_spans(store), "store"
    if loads.empty:
        fail("no window loads: ingest logs first (`dynamo ingest`) or pass --servegen m-small")
    detail = backtest_loads(loads, ctx.settings, names, test_days, spans, progress)
    if detail.empty:
        fail(f"not enough history for a {test_days}-day backtest; lower --test-days")
    q = ctx.settings.forecast.upper_quantile
    s = score(detail, q)
    save_backtest(store, s, source, test_days, q)
    click.echo(f"backtest on {source}, last {test_days} days, upper quantile {q:g} "
               "(MAPE/sMAPE/pinball in %, class-weighted by requests; coverage over windows)")
    click.echo(s.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if csv_path:
        detail.to_csv(csv_path, index=False)
        click.echo(f"per-window results: {csv_path}")


@forecast.command("show")
@click.option("--run", "run_id", type=int, help="Run id (default: the newest).")
@click.option("--horizon", type=click.Choice(HORIZONS), help="Newest run of this horizon.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG of the forecast against actual load.")
@pass_ctx
def forecast_show(ctx: Context, run_id: int | None, horizon: str | None, plot: str | None) -> None:
    """Show a stored forecast run (and plot it against the store's window loads)."""
    store = ctx.store()
    fc = load_forecast(store, run_id, horizon)
    if fc.empty:
        fail("no stored forecast: run `dynamo forecast fit` first")
    r = fc.iloc[0]
    click.echo(f"run {r.run_id}: {r.horizon} from {pd.Timestamp(int(r.origin_s), unit='s', tz='UTC')}, "
               f"forecaster {r.forecaster}, upper q{r.upper_quantile:g}, source {r.source}")
    click.echo(fc.groupby(["model", "class_name"]).agg(
        version=("model_version", "first"), train_from=("train_start_s", "first"), mean_rps=("rate_rps", "mean"),
        peak_upper_rps=("upper_rps", "max")).to_string(float_format=lambda x: f"{x:.3f}"))
    if plot:
        from dynamo_pipeline.forecast.plot import plot_forecast

        actual = window_loads(store, int(r.window_s), model=str(r.model))
        click.echo(f"plot: {plot_forecast(fc[fc.model == r.model], actual, plot)}")
