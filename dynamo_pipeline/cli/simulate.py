"""`dynamo simulate` (replay a trace under one policy) and `dynamo evaluate` (the paper's table)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pandas as pd

from dynamo_pipeline.cli import main
from dynamo_pipeline.cli.common import Context, fail, pass_ctx
from dynamo_pipeline.sim.cluster import ClusterParams
from dynamo_pipeline.sim.evaluate import POLICY_ORDER, evaluate, format_table, scale_for_servers, write_plots
from dynamo_pipeline.sim.policies import POLICIES, PolicyError
from dynamo_pipeline.sim.profile_view import ProfileError
from dynamo_pipeline.sim.replay import MODES, simulate
from dynamo_pipeline.sim.results import save_result
from dynamo_pipeline.sim.trace import SCALE_METHODS, TraceError, load_trace, predict_classes, read_trace_file, scale_trace


def _profile(ctx: Context, path: str | None) -> pd.DataFrame:
    hw = ctx.settings.hardware
    if path:
        try:
            return pd.read_csv(path)
        except (OSError, ValueError) as e:
            fail(f"cannot read profile {path}: {e}")
    from dynamo_pipeline.profiling import load_profile

    try:
        return load_profile(hw.gpu, hw.model)
    except (LookupError, ValueError) as e:
        fail(f"no profile for {hw.gpu} / {hw.model}: {e}; run `dynamo profile` or pass --profile")


def _trace(ctx: Context, trace: str, since: str | None, until: str | None):
    from dynamo_pipeline.cli.common import parse_time_s

    try:
        if Path(trace).exists():
            return read_trace_file(trace, ctx.settings)
        return load_trace(ctx.store(), ctx.settings, tenant=trace, model=ctx.settings.hardware.model,
                          since_s=parse_time_s(since), until_s=parse_time_s(until))
    except TraceError as e:
        fail(f"{e} (--trace is a file path or a tenant in the store, e.g. conv)")


def _prepare(ctx: Context, trace: str, since, until, scale: float | None, servers: int | None, method: str,
             error_rate: float, profile: pd.DataFrame, seed: int, use_predictor: bool):
    df = _trace(ctx, trace, since, until)
    if servers is not None and scale is not None:
        fail("give either --scale or --servers, not both")
    if servers is not None:
        df, _factor = scale_for_servers(df, ctx.settings, profile, servers, method, seed=seed)
    elif scale is not None and scale != 1.0:
        df = scale_trace(df, scale, method, seed=seed)
    predictor = _length_predictor(ctx) if use_predictor else None
    if predictor is not None:
        click.echo(f"routing by the length predictor {predictor.version}", err=True)
        return predict_classes(df, ctx.settings, seed=seed,
                               predictor=lambda d: predictor.predict(d)["output_tokens_est"].to_numpy())
    return predict_classes(df, ctx.settings, error_rate=error_rate, seed=seed)


def _length_predictor(ctx: Context):
    """The newest registered output-length predictor, or None when none is trained."""
    from dynamo_pipeline.lengths.model import LengthsError
    from dynamo_pipeline.lengths.registry import load_predictor

    try:
        return load_predictor(ctx.store())
    except (LengthsError, OSError):
        return None


_common = [
    click.option("--trace", required=True, help="A tenant in the store (e.g. conv, code) or a trace file "
                                                "(Azure CSV, or CSV/Parquet with t_s|arrived_at, input_tokens, output_tokens)."),
    click.option("--since", help="First arrival to replay (ISO 8601, UTC; store traces only)."),
    click.option("--until", help="End of the replay (exclusive)."),
    click.option("--mode", type=click.Choice(MODES), default="fast", show_default=True,
                 help="fast: profile lookups per instance and tick; detailed: the simulated inference server."),
    click.option("--scale", type=float, help="Multiply the arrival rate by this factor."),
    click.option("--servers", type=int, help="Scale the arrival rate until singlepool needs this many TP8 servers at peak."),
    click.option("--scale-method", type=click.Choice(SCALE_METHODS), default="superpose", show_default=True,
                 help="superpose: shifted copies of the trace (keeps its length and shape); compress: divide arrival times."),
    click.option("--error-rate", type=float, default=0.0, show_default=True,
                 help="Share of requests whose output bin is mispredicted, when no length predictor is used."),
    click.option("--predictor/--no-predictor", "use_predictor", default=True, show_default=True,
                 help="Route by the newest trained length predictor (`dynamo lengths train`) when there is one."),
    click.option("--profile", "profile_path", type=click.Path(exists=True, dir_okay=False),
                 help="Profile CSV (default: the stored/shipped profile of hardware.gpu / hardware.model)."),
    click.option("--tick", "tick_s", type=float, default=60.0, show_default=True, help="Seconds between agent clock decisions."),
    click.option("--seed", type=int, default=0, show_default=True),
]


def _with_common(f):
    for opt in reversed(_common):
        f = opt(f)
    return f


def _params(ctx: Context, tick_s: float, seed: int) -> ClusterParams:
    s = ctx.settings
    return ClusterParams(window_s=float(s.window_s), tick_s=tick_s, server_start_s=s.hardware.server_start_s,
                         reshard_s=s.planner.reshard_s, gpus_per_server=s.hardware.gpus_per_server, seed=seed)


@main.command("simulate")
@_with_common
@click.option("--policy", type=click.Choice(sorted(POLICIES)), required=True, help="The policy to replay.")
@click.option("--label", default="simulate", show_default=True, help="Label the stored run carries.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_ctx
def simulate_cmd(ctx: Context, trace, since, until, mode, scale, servers, scale_method, error_rate, profile_path,
                 use_predictor, tick_s, seed, policy, label, as_json) -> None:
    """Replay a trace through the cluster under one policy; store per-window results.

    Writes one row to sim_runs and one per 5-minute window to sim_windows (energy GPU and whole
    server, power, GPUs on, P50/P99 TTFT and TBT, SLO attainment, dropped/moved requests, GPU-hours,
    cost, carbon) and prints the summary.
    """
    profile = _profile(ctx, profile_path)
    df = _prepare(ctx, trace, since, until, scale, servers, scale_method, error_rate, profile, seed, use_predictor)
    try:
        r = simulate(df, policy, ctx.settings, profile, mode=mode, params=_params(ctx, tick_s, seed))
    except (PolicyError, ProfileError) as e:
        fail(str(e))
    run_id = save_result(ctx.store(), r, label)
    if as_json:
        click.echo(json.dumps({"run_id": run_id, **r.summary}, default=str, indent=2))
        return
    s = r.summary
    click.echo(f"run {run_id}: {policy} ({mode}) on {r.meta.get('source')} ×{r.meta.get('scale_factor', 1.0):.3g} "
               f"({s['requests']:,} requests, {len(r.windows)} windows)")
    click.echo(f"  energy: GPU {s['gpu_energy_kwh']:.2f} kWh, whole server {s['server_energy_kwh']:.2f} kWh; "
               f"servers on {s['mean_servers_on']:.1f} mean / {s['peak_servers_on']} peak")
    click.echo(f"  TTFT p50/p99 {s['ttft_p50_s'] * 1e3:.0f}/{s['ttft_p99_s'] * 1e3:.0f} ms, TBT p50/p99 "
               f"{s['tbt_p50_s'] * 1e3:.1f}/{s['tbt_p99_s'] * 1e3:.1f} ms; SLO met TTFT {s['ttft_attainment']:.2%} "
               f"TBT {s['tbt_attainment']:.2%}")
    click.echo(f"  fast path: {s['reordered']} re-ordered, {s['clock_raises']} clock raises, {s['moved']} moved, "
               f"{s['dropped']} dropped; GPU-hours {s['gpu_hours']:.1f}, cost ${s['cost_usd']:.2f}, "
               f"carbon {s['carbon_kg']:.2f} kg; replay {s['replay_s']:.2f} s")


@main.command("evaluate")
@_with_common
@click.option("--policies", default=",".join(POLICY_ORDER), show_default=True, help="Comma-separated policies.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Directory for the PNG plots "
                                                                         "(default: $DYNAMO_HOME/evaluate).")
@click.option("--label", default="evaluate", show_default=True)
@pass_ctx
def evaluate_cmd(ctx: Context, trace, since, until, mode, scale, servers, scale_method, error_rate, profile_path,
                 use_predictor, tick_s, seed, policies, out_dir, label) -> None:
    """The paper's table: every policy on one trace, GPU and whole-server energy side by side.

    \b
    The paper's setting (Llama-2-70B on H100, 12 servers for singlepool at peak):
      dynamo evaluate --trace conv --servers 12
    """
    profile = _profile(ctx, profile_path)
    df = _prepare(ctx, trace, since, until, scale, servers, scale_method, error_rate, profile, seed, use_predictor)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        fail(f"unknown policies {unknown}; choose from {sorted(POLICIES)}")
    try:
        ev = evaluate(df, ctx.settings, profile, names, mode=mode, params=_params(ctx, tick_s, seed),
                      store=ctx.store(), label=label, progress=True)
    except (PolicyError, ProfileError) as e:
        fail(str(e))
    click.echo(f"trace {df.attrs.get('source')}: {len(df):,} requests, arrival rate ×{ev.scale_factor:.3f} "
               f"({ev.scale_method}); mode {mode}; mispredicted {(df['pred_cls'] != df['cls']).mean():.1%} of requests "
               f"({df.attrs.get('predictor', 'error rate')})")
    click.echo(format_table(ev.table))
    click.echo("'paper': energy vs singlepool on the 1 h chat trace with 12 servers (DynamoLLM, HPCA 2025).")
    out = Path(out_dir) if out_dir else Path(ctx.settings.home) / "evaluate"
    for p in write_plots(ev, out):
        click.echo(f"wrote {p}")
