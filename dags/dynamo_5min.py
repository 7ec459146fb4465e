"""# dynamo_5min — the 5-minute loop

Every 5 minutes: validate the run's params → ingest new request logs from the inbox → refresh the
per-class window loads (published as the `dynamo_window_loads` Asset) → report whether the run
overran its window.

One run at a time (`max_active_runs=1`), no catch-up: a run that takes longer than its window is
**reported** by the `overrun` task (a warning in its log and `overran: true` in its XCom), never
stacked. Trigger it by hand with params to change objective weights, SLOs or to point at another
inbox. Each task calls one function of `dynamo_pipeline.pipeline`; `dynamo pipeline …` runs the same.

The forecast correction, pool plan, publish and acknowledgement check join between `windows` and
`overrun`, one task each, as their stages land (see `STEPS` below).
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
    params=common.RUN_PARAMS,
    tags=["dynamo", "5min", "planning"],
    doc_md=__doc__,
)
def dynamo_5min():
    @task
    def config() -> dict:
        """Validate the params; the effective run configuration goes to XCom."""
        return pipeline.run_config(common.settings(), get_current_context()["params"])

    @task
    def ingest(cfg: dict) -> dict:
        """Ingest log files of the inbox that were not loaded before."""
        s = common.settings()
        return pipeline.ingest_new_logs(s, common.inbox(get_current_context()["params"], s))

    @task(outlets=[common.WINDOW_LOADS])
    def windows(new: dict) -> dict:
        """Recompute the window loads the new rows touched; summarise the newest window."""
        return pipeline.refresh_windows(common.settings(), new["first_arrival_us"], new["last_arrival_us"])

    @task(trigger_rule="all_done", retries=0)
    def overrun(cfg: dict) -> dict:
        """Report (log + XCom flag) a run that took longer than its window; runs even after a failure."""
        ctx = get_current_context()
        return pipeline.check_overrun(ctx["dag_run"].start_date, cfg["window_s"])

    cfg = config()
    loads = windows(ingest(cfg))
    # Later stages add one task each here, and `last` moves to the newest one:
    #   fc = forecast(loads); pl = plan(cfg, fc); pub = publish(pl); last = acks(pub)
    last = loads
    last >> overrun(cfg)


dynamo_5min()
