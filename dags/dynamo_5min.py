"""# dynamo_5min — the 5-minute loop

Every 5 minutes: validate the run's params → ingest new request logs from the inbox → refresh the
per-class window loads (published as the `dynamo_window_loads` Asset) → intra-day forecast → pool
plan for the next window (the forecast's `upper_rps`; observed or `constant_rps` load without one;
the run's objective weights and SLOs) → publish the signed schedule (key: the `dynamo_schedule_key`
Variable/Connection or `DYNAMO_SCHEDULE_KEY`) → wait for the node agents' acknowledgements (`nodes`,
`ack_timeout_s`; none configured: "no agents to wait for") → report whether the run overran its window.

One run at a time (`max_active_runs=1`), no catch-up: a run that takes longer than its window is
**reported** by the `overrun` task (a warning in its log and `overran: true` in its XCom), never
stacked. Trigger it by hand with params to change objective weights, SLOs or to point at another
inbox. Each task calls one function of `dynamo_pipeline.pipeline`; `dynamo pipeline …` runs the same.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, get_current_context, task

from dynamo_pipeline import orchestration as common
from dynamo_pipeline import pipeline


@dag(
    dag_id="dynamo_5min",
    schedule=timedelta(minutes=5),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=15),
    default_args={**common.DEFAULT_ARGS, "execution_timeout": timedelta(minutes=4), "retry_delay": timedelta(seconds=10)},
    params={**common.RUN_PARAMS, **common.PLAN_PARAMS},
    tags=["dynamo", "5min", "planning"],
    doc_md=__doc__,
)
def dynamo_5min():
    @task
    def forecast(loads: dict) -> dict:
        """Intra-day forecast from the window loads (saved; no forecast when there is no history)."""
        return pipeline.forecast_step(common.settings(), horizon="intraday")

    @task
    def plan(cfg: dict, loads: dict, fc: dict) -> dict:
        """Pool plan for the next window: forecast upper rps, else observed rate, else constant_rps."""
        p = get_current_context()["params"]
        observed = {c: n / loads["window_s"] for c, n in loads["latest_arrivals_per_class"].items()}
        return pipeline.plan_step(common.settings(), cfg, fc["upper_rps"], observed, p.get("constant_rps"),
                                  servers=int(p["servers"]))

    @task
    def publish(pl: dict) -> dict:
        """Build, sign (key from Airflow or DYNAMO_SCHEDULE_KEY) and publish the plan's schedule."""
        return pipeline.publish_step(common.settings(), pl["plan_id"], key=common.schedule_key())

    @task(retries=1, retry_delay=timedelta(seconds=1))
    def acks(pub: dict) -> dict:
        """Wait for the configured node agents to acknowledge the version ("no agents to wait for" when none)."""
        p = get_current_context()["params"]
        return pipeline.check_acks(common.settings(), pub["version"], common.nodes(p), float(p["ack_timeout_s"]))

    @task(trigger_rule="all_done", retries=0)
    def overrun(cfg: dict) -> dict:
        """Report (log + XCom flag) a run that took longer than its window; runs even after a failure."""
        ctx = get_current_context()
        return pipeline.check_overrun(ctx["dag_run"].start_date, cfg["window_s"])

    @task(trigger_rule="one_failed", retries=0)
    def failed() -> None:
        """Fail the run when any step failed (the `overrun` leaf alone would mark it a success)."""
        raise RuntimeError("a step of this run failed; see the failed task's log")

    cfg = common.config()
    loads = common.windows(common.ingest(cfg))
    steps = [loads, forecast(loads)]
    steps.append(plan(cfg, loads, steps[-1]))
    steps.append(publish(steps[-1]))
    steps.append(acks(steps[-1]))
    steps[-1] >> overrun(cfg)
    steps >> failed()


dynamo_5min()
