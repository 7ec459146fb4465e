"""`dynamo agent run` (the node agent daemon) and `dynamo agent acks` (did the nodes apply a version?)."""

from __future__ import annotations

import signal
import socket
import sys

import click

from dynamo_pipeline.cli import main
from dynamo_pipeline.cli.common import Context, fail, pass_ctx


@main.group()
def agent() -> None:
    """The node agent that runs on every GPU server and enforces published schedules."""


@agent.command("run")
@click.option("--node", envvar="DYNAMO_NODE", default=socket.gethostname, show_default="this host's name",
              help="This server's name, as the planner writes it in schedules. Env: DYNAMO_NODE.")
@click.option("--backend", type=click.Choice(["nvml", "sim"]), default="nvml", show_default=True,
              help="nvml: real GPUs (locking clocks needs root); sim: a simulated node (tests, dry runs).")
@click.option("--source", type=click.Choice(["store", "dir", "http"]), default=None,
              help="Where schedules come from (default: agent.source).")
@click.option("--dir", "schedule_dir", type=click.Path(file_okay=False), help="For --source dir: the directory of signed *.json schedules.")
@click.option("--url", "schedule_url", help="For --source http: the URL serving the current signed schedule.")
@click.option("--metrics-url", help="The serving engine's Prometheus endpoint (vLLM: http://127.0.0.1:8000/metrics).")
@click.option("--port", type=int, help="Port of /metrics and /healthz on agent.listen_host (0: any free port).")
@click.option("--sim-gpus", type=int, default=8, show_default=True, help="GPUs of the simulated node (--backend sim).")
@click.option("--executor-log", type=click.Path(dir_okay=False), help="For the sim executor: append instance changes here.")
@pass_ctx
def run(ctx: Context, node: str, backend: str, source: str | None, schedule_dir: str | None, schedule_url: str | None,
        metrics_url: str | None, port: int | None, sim_gpus: int, executor_log: str | None) -> None:
    """Run the agent until SIGTERM/SIGINT, then reset every clock it locked.

    \b
    Needs DYNAMO_SCHEDULE_KEY (the planner's signing key). Control endpoint POST /signal needs the
    bearer token in the variable named by agent.token_env (DYNAMO_AGENT_TOKEN); without it, it is off.
    Tuning: agent.* settings in dynamo.yaml or DYNAMO_AGENT__<KEY> variables (tick_s,
    min_clock_change_s, fast_waiting_max, stale_after_s, ...).
    """
    from dynamo_pipeline.agent.build import build_agent
    from dynamo_pipeline.agent.daemon import AgentServer, token_from_env
    from dynamo_pipeline.hardware import HardwareError, make_backend
    from dynamo_pipeline.schedules.schema import ScheduleKeyError

    over = {k: v for k, v in {"source": source, "schedule_dir": schedule_dir, "schedule_url": schedule_url,
                              "metrics_url": metrics_url, "listen_port": port}.items() if v is not None}
    settings = ctx.settings
    if over:
        settings = settings.model_copy(update={"agent": settings.agent.model_copy(update=over)})
    if settings.agent.source == "store":
        ctx.store()  # migrated?
    try:
        hw = make_backend(backend, n_gpus=sim_gpus) if backend == "sim" else make_backend(backend)
    except HardwareError as e:
        fail(f"{e}")
    try:
        a = build_agent(settings, node, hw, executor_log)
    except (ScheduleKeyError, ValueError) as e:
        fail(str(e))
    cfg = settings.agent
    try:
        server = AgentServer(a, cfg.listen_host, cfg.listen_port, token_from_env(cfg.token_env)).start()
    except OSError as e:
        fail(f"cannot listen on {cfg.listen_host}:{cfg.listen_port} ({e}); pick another --port")
    signal.signal(signal.SIGTERM, a.stop)
    signal.signal(signal.SIGINT, a.stop)
    click.echo(f"agent {node}: backend {backend}, source {cfg.source}, http://{cfg.listen_host}:{server.port}/healthz", err=True)
    sys.stderr.flush()
    try:
        a.run()
    finally:
        server.close()
    click.echo(f"agent {node}: stopped, clocks reset", err=True)


@agent.command("acks")
@click.argument("version", type=int)
@click.option("--nodes", required=True, help="Comma-separated node names that must have applied VERSION.")
@click.option("--timeout", "timeout_s", type=float, default=0.0, show_default=True, help="Seconds to wait for them.")
@pass_ctx
def acks(ctx: Context, version: int, nodes: str, timeout_s: float) -> None:
    """Say which nodes applied (or rejected) schedule VERSION; exit 1 unless all applied."""
    from dynamo_pipeline.agent.acks import agents_acknowledged

    r = agents_acknowledged(ctx.store(), version, [n for n in nodes.split(",") if n], timeout_s)
    click.echo(f"version {version}: applied {len(r.applied)}, rejected {len(r.rejected)}, missing {len(r.missing)}")
    for n, why in sorted(r.rejected.items()):
        click.echo(f"  rejected by {n}: {why}")
    for n in sorted(r.missing):
        click.echo(f"  no answer from {n}")
    raise SystemExit(0 if r.ok else 1)
