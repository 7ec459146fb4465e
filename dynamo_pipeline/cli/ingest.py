"""`dynamo ingest`, `dynamo windows`, `dynamo classes fit`, `dynamo quarantine`, `dynamo runs`."""

from __future__ import annotations

import click
import numpy as np
import pandas as pd
from sqlalchemy import text

from dynamo_pipeline.classify import fit_thresholds
from dynamo_pipeline.cli import main
from dynamo_pipeline.cli.common import Context, fail, parse_time_s, pass_ctx
from dynamo_pipeline.ingest import MappingError, ingest_paths, load_mapping, window_loads
from dynamo_pipeline.ingest.load import quarantine_frame, runs_frame
from dynamo_pipeline.ingest.summary import format_summary, format_windows




@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--mapping", help="Column mapping: a YAML file or a preset (azure). Default: sniffed from a CSV "
                                "header (the Azure trace's TIMESTAMP, ContextTokens, GeneratedTokens).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when on a terminal).")
@pass_ctx
def ingest(ctx: Context, paths: tuple[str, ...], mapping: str | None, progress: bool | None) -> None:
    """Load request logs into the store.

    PATHS are files or directories (*.csv, *.jsonl, *.parquet, optionally gzipped). Bad rows go to
    the quarantine with file, line, raw text and reason; rows read = stored + quarantined for every
    file. Ingesting a file again (or one that overlaps) adds nothing; a killed run can simply be run
    again. Window loads are refreshed for the span each file covers.

    \b
    A mapping YAML for logs of other serving stacks:
      format: jsonl            # csv | jsonl | parquet
      columns: {arrived_at: ts, input_tokens: prompt_tokens, output_tokens: completion_tokens,
                request_id: id, model: model, tenant: user, prompt_text: prompt}
      time: epoch_ms           # iso8601 | epoch_s | epoch_ms | offset_s | offset_ms (+ start: ISO time)
      token_scale: 1
    """
    store = ctx.store()
    try:
        m = load_mapping(mapping) if mapping else None
        runs = ingest_paths(store, list(paths), ctx.settings, m, progress)
    except (MappingError, FileNotFoundError) as e:
        fail(str(e))
    click.echo(format_summary(runs))


@main.command()
@click.option("--model", help="Only this model.")
@click.option("--since", help="First window (ISO 8601, UTC).")
@click.option("--until", help="End (exclusive).")
@click.option("--value", type=click.Choice(["arrivals", "rate_rps", "input_tokens_sum", "output_tokens_sum"]),
              default="arrivals", show_default=True)
@click.option("--csv", "as_csv", is_flag=True, help="Print the long table as CSV instead.")
@pass_ctx
def windows(ctx: Context, model: str | None, since: str | None, until: str | None, value: str, as_csv: bool) -> None:
    """Per-class window loads (derived from the request log; refreshed by every ingest)."""
    df = window_loads(ctx.store(), ctx.settings.window_s, model, parse_time_s(since), parse_time_s(until))
    if as_csv:
        click.echo(df.drop(columns=["window_start"]).to_csv(index=False), nl=False)
    else:
        click.echo(format_windows(df, ctx.settings.classes.names(), value))


@main.group()
def classes() -> None:
    """Request classes (length bins)."""


@classes.command("fit")
@click.option("--quantiles", default="0.3333,0.6667", show_default=True,
              help="Two quantiles of history at which to put the S/M and M/L edges.")
@click.option("--model", help="Only this model's requests.")
@pass_ctx
def classes_fit(ctx: Context, quantiles: str, model: str | None) -> None:
    """Propose input/output bins from the stored request log. Prints YAML to paste into your config;
    never changes the config itself."""
    try:
        q = tuple(float(x) for x in quantiles.split(","))
        assert len(q) == 2
    except (ValueError, AssertionError):
        raise click.BadParameter("give two numbers, e.g. 0.33,0.67", param_hint="--quantiles")
    sql = "SELECT input_tokens, output_tokens FROM requests" + (" WHERE model = :m" if model else "")
    with ctx.store().engine.connect() as conn:
        df = pd.read_sql(text(sql), conn, params={"m": model} if model else {})
    try:
        p = fit_thresholds(df.input_tokens.to_numpy(np.int64), df.output_tokens.to_numpy(np.int64), q)  # type: ignore[arg-type]
    except ValueError as e:
        fail(str(e))
    cur = ctx.settings.classes
    click.echo(f"from {p.n_requests:,} requests; current bins: input {list(cur.input_bins_tokens)}, "
               f"output {list(cur.output_bins_tokens)}\nproposed (add to your config to use):\n")
    click.echo(p.as_yaml())
    click.echo("class shares under the proposal: " + ", ".join(f"{k} {v:.1%}" for k, v in sorted(p.class_shares.items())))


@main.command()
@click.option("--run", "run_id", type=int, help="Only rows of this ingest run (see `dynamo runs`).")
@click.option("--limit", default=20, show_default=True)
@pass_ctx
def quarantine(ctx: Context, run_id: int | None, limit: int) -> None:
    """Show quarantined rows: source file, line, reason and the raw text."""
    df = quarantine_frame(ctx.store(), run_id, limit)
    click.echo("quarantine is empty" if df.empty else df.to_string(index=False, max_colwidth=60))


@main.command()
@pass_ctx
def runs(ctx: Context) -> None:
    """List ingest runs with their counts (read = inserted + already present + quarantined)."""
    df = runs_frame(ctx.store())
    if df.empty:
        click.echo("no ingest runs yet")
        return
    cols = ["id", "status", "rows_read", "rows_inserted", "rows_already_present", "rows_quarantined", "source"]
    click.echo(df[cols].to_string(index=False))
