"""`dynamo lengths train|evaluate|account`: thin wrappers over :mod:`dynamo_pipeline.lengths`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dynamo_pipeline.cli import main
from dynamo_pipeline.cli.common import Context, fail, pass_ctx
from dynamo_pipeline.lengths import (
    LengthsError,
    evaluate,
    load_predictor,
    misprediction_counts,
    misprediction_summary,
    record_mispredictions,
    register_predictor,
    train,
)
from dynamo_pipeline.lengths.data import load_dataset, load_store_requests

_DATA = click.Choice(["length_pairs", "alpaca_eval", "store"])
_DATA_HELP = ("Training data: length_pairs (../shared/data/length_pairs), alpaca_eval (../shared/data, "
              "non-commercial: read in place, never copied) or store (the ingested request log).")


@main.group()
def lengths() -> None:
    """Output-length predictor: output class (S/M/L by classes.output_bins_tokens) and token estimate."""


def _print_eval(r: dict) -> None:
    click.echo(f"{r['data']}: prompt-wise split, {r['train_rows']:,} train rows ({r['train_prompts']:,} prompts), "
               f"{r['test_rows']:,} test rows ({r['test_prompts']:,} prompts)")
    for k in ("model", "majority", "input_length_only"):
        rec = " ".join(f"{c}={v:.3f}" for c, v in r[k]["recall"].items())
        click.echo(f"  {k:18s} accuracy {r[k]['accuracy']:.4f}   recall {rec}")
    click.echo(f"  confusion (rows true S/M/L, columns predicted): {r['model']['confusion']}")
    click.echo(f"  token estimate: median absolute error {r['token_median_abs_error']:.0f} tokens")


@lengths.command("evaluate")
@click.option("--data", type=_DATA, default="length_pairs", show_default=True, help=_DATA_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@pass_ctx
def lengths_evaluate(ctx: Context, data: str, as_json: bool) -> None:
    """Prompt-wise evaluation (no prompt on both sides) against the majority class and an
    input-length-only classifier: accuracy, per-class recall, confusion matrix."""
    try:
        df = load_dataset(data, ctx.store() if data == "store" else None)
        r = evaluate(df, ctx.settings.classes, ctx.settings.lengths, data)
    except LengthsError as e:
        fail(str(e))
        return
    r.pop("predictor")
    click.echo(json.dumps(r, indent=2) if as_json else "", nl=as_json)
    if not as_json:
        _print_eval(r)


@lengths.command("train")
@click.option("--data", type=_DATA, default="length_pairs", show_default=True, help=_DATA_HELP)
@click.option("--out", type=click.Path(file_okay=False), help="Directory for the joblib file (default: HOME/models).")
@pass_ctx
def lengths_train(ctx: Context, data: str, out: str | None) -> None:
    """Evaluate prompt-wise, then train on all rows, save (joblib, with version and training metadata)
    and register the predictor in the store (length_models)."""
    store = ctx.store()
    try:
        df = load_dataset(data, store if data == "store" else None)
        r = evaluate(df, ctx.settings.classes, ctx.settings.lengths, data)
        r.pop("predictor")
        pred = train(df, ctx.settings.classes, ctx.settings.lengths, data)
    except LengthsError as e:
        fail(str(e))
        return
    pred.metadata["evaluation"] = {k: r[k]["accuracy"] for k in ("model", "majority", "input_length_only")}
    path = pred.save(Path(out) if out else Path(ctx.settings.home) / ctx.settings.lengths.model_dir)
    register_predictor(store, pred, path, r["model"]["accuracy"])
    _print_eval(r)
    click.echo(f"saved {pred.version} ({len(df):,} rows) to {path}")


@lengths.command("account")
@click.option("--version", help="Predictor version (default: the newest registered).")
@pass_ctx
def lengths_account(ctx: Context, version: str | None) -> None:
    """Predict the class of every stored request and record, per window, how many landed in a class
    other than their true one (table mispredictions)."""
    store = ctx.store()
    try:
        pred = load_predictor(store, version)
    except LengthsError as e:
        fail(str(e))
        return
    req = load_store_requests(store)
    if req.empty:
        fail("no requests in the store: run `dynamo ingest` first")
    p = pred.predict(req)
    counts = misprediction_counts(req, p.output_tokens_est, ctx.settings.classes, ctx.settings.window_s,
                                  p.output_class.to_numpy())
    record_mispredictions(store, counts, pred.version)
    s = misprediction_summary(counts)
    click.echo(f"{pred.version}: {int(s.mispredicted.sum()):,} of {int(s.requests.sum()):,} requests mispredicted "
               f"({s.mispredicted.sum() / s.requests.sum():.1%}), {int(s.under_predicted.sum()):,} under-predicted, "
               f"over {len(s)} windows")
