"""`dynamo plan`, `dynamo plan show`, `dynamo schedule publish`, `dynamo carbon load`: the planner's
commands, thin wrappers over ``dynamo_pipeline.planning`` and ``dynamo_pipeline.schedules``.

The CLI reads the files the library never reads itself: the profile CSV (``--profile``, default
``profiles/<gpu>/<model>.csv``) and the loads (the store's newest window loads before ``--at`` or a
constant ``--load-rps`` when no forecast or observation exists).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import pandas as pd
from sqlalchemy import func, select

from dynamo_pipeline.cli import main
from dynamo_pipeline.cli.common import Context, fail, pass_ctx
from dynamo_pipeline.config import Settings
from dynamo_pipeline.planning.cluster import cluster_plan
from dynamo_pipeline.planning.problem import PlanningError, pool_problem, resolve_loads
from dynamo_pipeline.planning.records import carbon_at, load_carbon_csv, read_plan, save_plan
from dynamo_pipeline.planning.solve import plan_pool
from dynamo_pipeline.planning.testing import synthetic_profile
from dynamo_pipeline.schedules.build import build_schedule_from_groups
from dynamo_pipeline.schedules.schema import ScheduleError, sign
from dynamo_pipeline.schedules.store import next_version, publish
from dynamo_pipeline.store.tables.ingest import WindowLoad


def _parse_time(value: str | None) -> datetime:
    if value in (None, "now"):
        return datetime.now(timezone.utc)
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        fail(f"--at {value!r} is not a time; use ISO 8601, e.g. 2026-11-24T16:00:00Z")
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def _profile(settings: Settings, path: str | None, synthetic: bool) -> pd.DataFrame:
    if synthetic:
        return synthetic_profile(gpu=settings.hardware.gpu, model=settings.hardware.model)
    p = Path(path or f"profiles/{settings.hardware.gpu}/{settings.hardware.model}.csv")
    if not p.exists():
        fail(f"profile {p} not found: run `dynamo profile` to make one, pass --profile PATH, "
             "or --synthetic to plan on the built-in synthetic profile")
    return pd.read_csv(p)


def _observed(ctx: Context, at: datetime, classes: list[str]) -> dict[str, float]:
    store = ctx.store()
    s_at = int(at.timestamp())
    with store.session() as s:
        latest = s.scalar(select(func.max(WindowLoad.window_start_s)).where(
            WindowLoad.window_start_s <= s_at, WindowLoad.model == ctx.settings.hardware.model))
        if latest is None:
            return {}
        rows = s.execute(select(WindowLoad.class_name, WindowLoad.rate_rps).where(
            WindowLoad.window_start_s == latest, WindowLoad.model == ctx.settings.hardware.model)).all()
    return {c: float(r) for c, r in rows if c in classes}


@main.group("plan", invoke_without_command=True)
@click.option("--level", type=click.Choice(["pool", "cluster"]), default="pool", show_default=True,
              help="pool: TP and load split within the GPU budget (5 min); cluster: servers per pool too (30 min).")
@click.option("--at", "at_", default="now", show_default=True, help="Start of the window to plan (ISO 8601, UTC).")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False), help="Profile CSV (default profiles/<gpu>/<model>.csv).")
@click.option("--synthetic", is_flag=True, help="Use the built-in synthetic profile (no profile file needed).")
@click.option("--load-rps", type=float, help="Constant per-class load for classes with no observed load.")
@click.option("--servers", type=int, default=40, show_default=True, help="Servers in the fleet (GPU budget = servers × GPUs per server).")
@click.pass_context
def plan_cmd(cctx: click.Context, level: str, at_: str, profile_path: str | None, synthetic: bool,
             load_rps: float | None, servers: int) -> None:
    """Plan one window and record the plan (solver, status, gap, times, flags) in the store.

    Loads: a forecast when one is stored (not yet wired), else the newest observed window loads
    before --at, else --load-rps. Prints the plan; publish it with `dynamo schedule publish`.
    """
    if cctx.invoked_subcommand is not None:
        return
    ctx: Context = cctx.obj
    settings = ctx.settings
    at = _parse_time(at_)
    profiles = _profile(settings, profile_path, synthetic)
    classes = sorted(set(profiles["class_name"]))
    try:
        loads, source = resolve_loads(classes, forecast=None, observed=_observed(ctx, at, classes), constant_rps=load_rps)
    except PlanningError as e:
        fail(str(e))
    store = ctx.store()
    carbon = carbon_at(store, at, settings.carbon.default_g_per_kwh)
    pl = settings.planner
    if level == "pool":
        window_s = pl.pool_interval_s
        prob = pool_problem(profiles, loads, settings, servers * settings.hardware.gpus_per_server,
                            pools={"all": classes}, carbon_g_per_kwh=carbon)
        plan = plan_pool(prob, pl.solver, pl.time_limit_s, pl.mip_rel_gap)
        servers_by_pool = {"all": servers}
    else:
        window_s = pl.cluster_interval_s
        cp = cluster_plan(profiles, loads, settings, servers, carbon_g_per_kwh=carbon)
        plan, servers_by_pool = cp.pool_plan, cp.servers_by_pool
    plan.flags.append(f"loads from: {source}")
    start = int(at.timestamp())
    pid = save_plan(store, plan, level, start, start + window_s, source, servers_by_pool)
    click.echo(json.dumps({"plan_id": pid, "level": level, "servers_by_pool": servers_by_pool, **plan.summary()},
                          indent=2, default=str))


@plan_cmd.command("show")
@click.option("--id", "plan_id", type=int, help="Plan id (default: the newest).")
@pass_ctx
def plan_show(ctx: Context, plan_id: int | None) -> None:
    """Show a stored plan: how it was obtained and its instance groups."""
    try:
        sp = read_plan(ctx.store(), plan_id)
    except PlanningError as e:
        fail(str(e))
    head = {k: getattr(sp, k) for k in ("id", "level", "solver", "status", "gap", "build_s", "solve_s",
                                        "objective", "energy_j", "load_source", "flags", "servers_by_pool")}
    click.echo(json.dumps(head, indent=2, default=str))
    click.echo(pd.DataFrame([g.__dict__ for g in sp.groups]).to_string(index=False) if sp.groups else "(no instances)")


@main.group("schedule")
def schedule_group() -> None:
    """Published schedules (signed with DYNAMO_SCHEDULE_KEY)."""


@schedule_group.command("publish")
@click.option("--plan", "plan_id", type=int, help="Plan id (default: the newest).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Also write JSON files here (default $DYNAMO_HOME/schedules).")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False), help="Profile CSV for the clock tables.")
@click.option("--synthetic", is_flag=True, help="Use the built-in synthetic profile for the clock tables.")
@pass_ctx
def schedule_publish(ctx: Context, plan_id: int | None, directory: str | None, profile_path: str | None, synthetic: bool) -> None:
    """Build the schedule for a plan, sign it and publish it as the next version (store + directory)."""
    settings = ctx.settings
    store = ctx.store()
    try:
        sp = read_plan(store, plan_id)
        profiles = _profile(settings, profile_path, synthetic)
        start = datetime.fromtimestamp(sp.window_start_s, timezone.utc)
        end = datetime.fromtimestamp(sp.window_end_s, timezone.utc)
        version = next_version(store)
        sch = build_schedule_from_groups(sp.groups, sp.flags, profiles, settings, version, [(start, end)],
                                         servers_by_pool=sp.servers_by_pool, plan_id=sp.id)
        signed = sign(sch)
        out = Path(directory or Path(settings.home) / "schedules")
        publish(signed, store=store, directory=out)
    except (PlanningError, ScheduleError) as e:
        fail(str(e))
    click.echo(f"published schedule version {version} (plan {sp.id}, valid {start.isoformat()} – "
               f"{(end if end > start else start + timedelta(seconds=1)).isoformat()}) to the store and {out}")


@main.group("carbon")
def carbon_group() -> None:
    """Grid carbon intensity used by the planner's carbon term."""


@carbon_group.command("load")
@click.argument("csv", type=click.Path(exists=True, dir_okay=False))
@click.option("--region", default="default", show_default=True)
@pass_ctx
def carbon_load(ctx: Context, csv: str, region: str) -> None:
    """Load an hourly intensity CSV: a time column (hour/timestamp, ISO or epoch s) and g_per_kwh.
    Hours without a row use carbon.default_g_per_kwh."""
    try:
        n = load_carbon_csv(ctx.store(), csv, region)
    except PlanningError as e:
        fail(str(e))
    click.echo(f"loaded {n} hours of carbon intensity for region {region}")
