"""Airflow glue shared by the DAG files in dags/ (imported only there, so the package runs without
Airflow): settings resolved through Airflow, default task
arguments, the Assets that hand data from one DAG to another, and the Params of manual runs.

No pipeline logic lives here (that is :mod:`dynamo_pipeline.pipeline`); the tasks every planning DAG
starts with (config → ingest → windows) are defined here once, each a call to one pipeline step. Secrets come only through
Airflow: the store's URL is the Variable ``dynamo_database_url`` (a secrets backend or
``AIRFLOW_VAR_DYNAMO_DATABASE_URL`` can supply it), else the Connection ``dynamo_db``, else the
project's own settings (``DYNAMO_DATABASE_URL`` / ``dynamo.yaml`` / ``$DYNAMO_HOME/dynamo.db``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from airflow.sdk import Asset, BaseHook, Param, Variable, get_current_context, task
from airflow.sdk.exceptions import AirflowNotFoundException

from dynamo_pipeline import pipeline
from dynamo_pipeline.config import Settings, load_settings

log = logging.getLogger(__name__)

#: Every task retries twice and is killed after its timeout; DAGs may tighten the timeout.
DEFAULT_ARGS = {
    "owner": "dynamo",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "execution_timeout": timedelta(minutes=10),
}

#: Per-class window loads in the store, written by ingest + window refresh, read by forecasts/reports.
WINDOW_LOADS = Asset(name="dynamo_window_loads", uri="dynamo://store/window_loads")
#: The report files (CSV + PNG) under $DYNAMO_HOME/reports.
REPORTS = Asset(name="dynamo_reports", uri="dynamo://files/reports")

#: Params every manual run of a planning DAG accepts (validated by the UI form and again by
#: :func:`dynamo_pipeline.pipeline.run_config`).
RUN_PARAMS = {
    "objective_weights": Param(
        {"energy": 1.0, "carbon": 0.0, "cost": 0.0}, type="object",
        properties={k: {"type": "number", "minimum": 0} for k in ("energy", "carbon", "cost")},
        additionalProperties=False,
        description="Relative weights of energy, carbon and cost in the plan's objective (≥ 0).",
    ),
    "slo_overrides": Param(
        {}, type="object",
        properties={k: {"type": ["number", "null"], "exclusiveMinimum": 0} for k in ("ttft_p99_s", "tbt_p99_s")},
        additionalProperties=False,
        description="Override the P99 SLOs for this run, seconds (ttft_p99_s, tbt_p99_s).",
    ),
    "whatif_trace": Param(None, type=["null", "string"], description="A request log to simulate instead of live traffic "
                          "(path on the workers); empty for none."),
    "inbox": Param(None, type=["null", "string"], description="Folder of new request logs; empty: the `dynamo_inbox` "
                   "Variable, else $DYNAMO_HOME/inbox."),
}


def database_url() -> str | None:
    """The store URL from Airflow (Variable, then Connection), or None to use the project's settings."""
    url = Variable.get("dynamo_database_url", default=None)
    if url:
        return url
    try:
        conn = BaseHook.get_connection("dynamo_db")
    except AirflowNotFoundException:
        return None
    uri = conn.get_uri()
    return uri.replace("postgres://", "postgresql+psycopg://", 1).replace("postgresql://", "postgresql+psycopg://", 1)


def settings() -> Settings:
    """The project's settings with the store URL resolved through Airflow."""
    url = database_url()
    return load_settings(None, **({"database_url": url} if url else {}))


def inbox(params: dict, s: Settings) -> str:
    """The log inbox: the run's ``inbox`` param, else the ``dynamo_inbox`` Variable, else $DYNAMO_HOME/inbox."""
    return params.get("inbox") or Variable.get("dynamo_inbox", default=None) or str(Path(s.home) / "inbox")


def schedule_key() -> bytes | None:
    """The schedule signing key from Airflow: the Variable ``dynamo_schedule_key``, else the password
    of the Connection ``dynamo_schedule_key``; None leaves signing to ``DYNAMO_SCHEDULE_KEY``."""
    key = Variable.get("dynamo_schedule_key", default=None)
    if not key:
        try:
            key = BaseHook.get_connection("dynamo_schedule_key").password
        except AirflowNotFoundException:
            key = None
    return key.encode() if key else None


def nodes(params: dict) -> list[str]:
    """Node agents to wait for: the run's ``nodes`` param, else the ``dynamo_nodes`` Variable
    (comma-separated), else none."""
    given = params.get("nodes")
    if given:
        return [str(n) for n in given]
    var = Variable.get("dynamo_nodes", default="") or ""
    return [n.strip() for n in var.split(",") if n.strip()]


#: Params of the planning steps (fleet size, fallback load, acknowledgement wait).
PLAN_PARAMS = {
    "servers": Param(40, type="integer", minimum=1, description="Servers in the fleet (GPU budget = servers × GPUs per server)."),
    "constant_rps": Param(None, type=["null", "number"], minimum=0,
                          description="Per-class load for classes with neither a forecast nor an observed rate; empty: none."),
    "nodes": Param([], type="array", items={"type": "string"},
                   description="Node agents that must acknowledge the schedule; empty: the `dynamo_nodes` Variable, else none."),
    "ack_timeout_s": Param(60, type="number", minimum=0, description="How long to wait for the agents' acknowledgements, seconds."),
}


# -- the tasks every planning DAG starts with -------------------------------------------------------

@task
def config() -> dict:
    """Validate the params; the effective run configuration goes to XCom."""
    return pipeline.run_config(settings(), get_current_context()["params"])


@task
def ingest(cfg: dict) -> dict:
    """Ingest the inbox's log files that were not loaded before (by SHA-256)."""
    s = settings()
    return pipeline.ingest_new_logs(s, inbox(get_current_context()["params"], s))


@task(outlets=[WINDOW_LOADS])
def windows(new: dict) -> dict:
    """Recompute the window loads the new rows touched; summarise the newest window."""
    return pipeline.refresh_windows(settings(), new["first_arrival_us"], new["last_arrival_us"])
