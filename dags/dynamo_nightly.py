"""# dynamo_nightly — the day's batch

Once a day: validate params → ingest the day's request logs from the inbox → refresh window loads
for what they covered (the `dynamo_window_loads` Asset) → write every SQL report for the day (CSV and
PNG under `$DYNAMO_HOME/reports/nightly/<day>`, the `dynamo_reports` Asset).

The report range is the run's data interval (the previous day); `report_since` / `report_until`
(ISO 8601) override it for a manual rerun of another day. Later stages add, one task each: train the
length predictor, fit forecasts, refresh profiles if stale (a branch to a `gpu` pool), the nightly
cluster plan and publish — between `windows` and `reports`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from dynamo_pipeline import orchestration as common
from dynamo_pipeline import pipeline


def _epoch_s(value: str | None, fallback) -> int:
    return int((pendulum.parse(value) if value else fallback).timestamp())


@dag(
    dag_id="dynamo_nightly",
    schedule="30 0 * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=3),
    default_args={**common.DEFAULT_ARGS, "execution_timeout": timedelta(hours=1)},
    params={
        **common.RUN_PARAMS,
        "report_since": Param(None, type=["null", "string"], description="Start of the report range (ISO 8601); empty: data interval."),
        "report_until": Param(None, type=["null", "string"], description="End of the report range (ISO 8601); empty: data interval."),
    },
    tags=["dynamo", "nightly", "planning", "reports"],
    doc_md=__doc__,
)
def dynamo_nightly():
    @task
    def config() -> dict:
        """Validate the params; the effective run configuration goes to XCom."""
        return pipeline.run_config(common.settings(), get_current_context()["params"])

    @task
    def ingest(cfg: dict) -> dict:
        """Ingest the day's log files (those of the inbox not loaded before)."""
        s = common.settings()
        return pipeline.ingest_new_logs(s, common.inbox(get_current_context()["params"], s))

    @task(outlets=[common.WINDOW_LOADS])
    def windows(new: dict) -> dict:
        """Recompute the window loads the day's rows touched."""
        return pipeline.refresh_windows(common.settings(), new["first_arrival_us"], new["last_arrival_us"])

    @task(outlets=[common.REPORTS])
    def reports(loads: dict) -> dict:
        """Write every SQL report for the day as CSV and PNG."""
        ctx = get_current_context()
        p, s = ctx["params"], common.settings()
        since = _epoch_s(p.get("report_since"), ctx["data_interval_start"])
        until = _epoch_s(p.get("report_until"), ctx["data_interval_end"])
        day = datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%d")
        return pipeline.write_reports(s, Path(s.home) / "reports" / "nightly" / day, since, until)

    # STEPS: ingest → windows → [lengths → forecasts → profiles-if-stale → plan → publish] → reports
    reports(windows(ingest(config())))


dynamo_nightly()
