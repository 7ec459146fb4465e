"""`dynamo report` and `dynamo pipeline …`: the CLI twins of the steps the Airflow DAGs run.

Each command calls the same function of :mod:`dynamo_pipeline.pipeline` or
:mod:`dynamo_pipeline.reports` that a DAG task calls, so any step can be run (or debugged) by hand.
"""

from __future__ import annotations

import json

import click
import pandas as pd

from dynamo_pipeline import pipeline as steps
from dynamo_pipeline import reports
from dynamo_pipeline.cli import main
from dynamo_pipeline.cli.common import Context, fail, parse_time_s, pass_ctx
from dynamo_pipeline.config import ConfigError
from dynamo_pipeline.store.db import StoreError




def _echo(result: dict) -> None:
    click.echo(json.dumps(result, indent=2, default=str))


@main.command()
@click.argument("name", required=False)
@click.option("--since", help="Start of the range (ISO 8601, UTC; inclusive). Default: everything.")
@click.option("--until", help="End of the range (exclusive).")
@click.option("--format", "fmt", type=click.Choice(reports.FORMATS), default="table", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of printing (needed for png).")
@click.option("--list", "list_", is_flag=True, help="List the available reports and exit.")
@pass_ctx
def report(ctx: Context, name: str | None, since: str | None, until: str | None, fmt: str, out: str | None,
           list_: bool) -> None:
    """Run the SQL report NAME (a file sql/NAME.sql) on the store.

    \b
    Examples:
      dynamo report --list
      dynamo report load_by_class_day --since 2023-11-16 --until 2023-11-17
      dynamo report ingest_quality --format csv --out quality.csv
      dynamo report load_by_class_day --format png --out load.png
    Reports are plain SELECTs with :since_s/:until_s parameters; see sql/README.md to add one.
    """
    if list_ or not name:
        for n in reports.available():
            click.echo(f"{n:24s} {reports.load(n).title}")
        if not list_:
            click.echo("\ngive a report NAME to run one", err=True)
        return
    try:
        df = reports.run_report(ctx.store(), name, parse_time_s(since), parse_time_s(until))
        result = reports.render(df, name, fmt, out)
    except reports.ReportError as e:
        fail(str(e))
    click.echo(f"wrote {result}" if out else result, nl=not (fmt == "csv" and not out))


@main.group()
def pipeline() -> None:
    """The scheduled pipeline's steps, one command each (what the Airflow DAG tasks call)."""


def _step(fn, *args, **kwargs) -> None:
    try:
        _echo(fn(*args, **kwargs))
    except (ConfigError, FileNotFoundError, StoreError, reports.ReportError) as e:
        fail(str(e))


@pipeline.command("config")
@click.argument("params_json", default="{}")
@pass_ctx
def pipeline_config(ctx: Context, params_json: str) -> None:
    """Validate a manual run's params (JSON: objective_weights, slo_overrides, whatif_trace) and print
    the effective run configuration, as the DAGs' first task does."""
    try:
        params = json.loads(params_json)
    except json.JSONDecodeError as e:
        fail(f"PARAMS_JSON is not JSON ({e}); e.g. '{{\"objective_weights\": {{\"energy\": 1}}}}'")
    _step(steps.run_config, ctx.settings, params)


@pipeline.command("ingest-new")
@click.argument("inbox", type=click.Path(file_okay=False))
@pass_ctx
def pipeline_ingest_new(ctx: Context, inbox: str) -> None:
    """Ingest the log files under INBOX that were not loaded before (matched by SHA-256)."""
    _step(steps.ingest_new_logs, ctx.settings, inbox)


@pipeline.command("windows")
@click.option("--since", help="Refresh windows from this time (ISO 8601, UTC).")
@click.option("--until", help="… to this time. Without both, only summarise the newest window.")
@pass_ctx
def pipeline_windows(ctx: Context, since: str | None, until: str | None) -> None:
    """Recompute window loads for a span and summarise the newest window."""
    a, b = parse_time_s(since), parse_time_s(until)
    _step(steps.refresh_windows, ctx.settings, None if a is None else a * 1_000_000,
          None if b is None else b * 1_000_000)


@pipeline.command("reports")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the files.")
@click.option("--since", help="Start (ISO 8601, UTC).")
@click.option("--until", help="End (exclusive).")
@click.option("--name", "names", multiple=True, help="Only these reports (repeatable). Default: all.")
@pass_ctx
def pipeline_reports(ctx: Context, out_dir: str, since: str | None, until: str | None, names: tuple[str, ...]) -> None:
    """Write every SQL report as CSV and PNG into a folder."""
    _step(steps.write_reports, ctx.settings, out_dir, parse_time_s(since), parse_time_s(until), list(names) or None)


@pipeline.command("overrun")
@click.argument("started_at")
@click.option("--window-s", type=float, help="The run's window in seconds (default: the configured window_s).")
@pass_ctx
def pipeline_overrun(ctx: Context, started_at: str, window_s: float | None) -> None:
    """Say whether a run that started at STARTED_AT (ISO 8601) has overrun its window."""
    ts = pd.Timestamp(parse_time_s(started_at), unit="s", tz="UTC").to_pydatetime()
    _step(steps.check_overrun, ts, window_s or ctx.settings.window_s)
