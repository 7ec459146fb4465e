"""# dynamo_nightly — the day's batch

Once a day: validate params → ingest the day's request logs from the inbox → refresh window loads
for what they covered (the `dynamo_window_loads` Asset) → train the length predictor (skipped with
the reason when fewer than `lengths_min_rows` requests) → day-ahead forecast → refresh the profile
if stale (a branch; the refresh profiles on the `sim` backend in the `gpu` pool) → tomorrow's 48
half-hour cluster plans → publish the signed schedule → write every SQL report for the day (CSV and
PNG under `$DYNAMO_HOME/reports/nightly/<day>`, the `dynamo_reports` Asset).

The report range is the run's data interval (the previous day); `report_since` / `report_until`
(ISO 8601) override it for a manual rerun of another day.
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
        **common.PLAN_PARAMS,
        "plan_windows": Param(48, type="integer", minimum=1, description="Half-hour cluster-plan windows to plan (48: a day)."),
        "lengths_min_rows": Param(1000, type="integer", minimum=20, description="Fewest stored requests to train the length predictor on."),
        "profile_max_age_days": Param(30, type="number", minimum=0, description="Re-profile when the profile is older, days."),
        "report_since": Param(None, type=["null", "string"], description="Start of the report range (ISO 8601); empty: data interval."),
        "report_until": Param(None, type=["null", "string"], description="End of the report range (ISO 8601); empty: data interval."),
    },
    tags=["dynamo", "nightly", "planning", "reports"],
    doc_md=__doc__,
)
def dynamo_nightly():
    @task
    def lengths(loads: dict) -> dict:
        """Train the output-length predictor on the store's requests (skipped, with the reason, on too little data)."""
        return pipeline.train_lengths_step(common.settings(), int(get_current_context()["params"]["lengths_min_rows"]))

    @task
    def forecast(loads: dict) -> dict:
        """Day-ahead forecast from the window loads (saved); its half-hour peaks feed the nightly plan."""
        return pipeline.forecast_step(common.settings(), horizon="day_ahead")

    @task.branch
    def profiles_stale(fc: dict) -> str:
        """Branch: re-profile when the configured GPU × model profile is missing or too old."""
        p = get_current_context()["params"]
        st = pipeline.profile_stale(common.settings(), float(p["profile_max_age_days"]))
        return "refresh_profile" if st["stale"] else "profiles_fresh"

    @task(pool="gpu")
    def refresh_profile() -> dict:
        """Re-profile the configured model on the sim backend (the `gpu` pool bounds concurrent profiling)."""
        return pipeline.refresh_profile_step(common.settings())

    @task
    def profiles_fresh() -> dict:
        """The profile is recent enough: nothing to refresh."""
        return {"stale": False}

    @task(trigger_rule="none_failed_min_one_success")
    def plan(cfg: dict, fc: dict) -> dict:
        """Tomorrow's 48 half-hour cluster plans from the day-ahead peaks, each saved."""
        p = get_current_context()["params"]
        return pipeline.nightly_plan_step(common.settings(), cfg, fc["peaks_rps"], servers=int(p["servers"]),
                                          windows=int(p["plan_windows"]))

    @task
    def publish(pl: dict) -> dict:
        """Sign and publish tomorrow's schedule (key from Airflow or DYNAMO_SCHEDULE_KEY)."""
        return pipeline.publish_step(common.settings(), pl["plan_ids"], key=common.schedule_key())

    @task(outlets=[common.REPORTS])
    def reports(pub: dict) -> dict:
        """Write every SQL report for the day as CSV and PNG."""
        ctx = get_current_context()
        p, s = ctx["params"], common.settings()
        since = _epoch_s(p.get("report_since"), ctx["data_interval_start"])
        until = _epoch_s(p.get("report_until"), ctx["data_interval_end"])
        day = datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%d")
        return pipeline.write_reports(s, Path(s.home) / "reports" / "nightly" / day, since, until)

    cfg = common.config()
    loads = common.windows(common.ingest(cfg))
    fc = forecast(loads)
    lengths(loads) >> fc
    branch = profiles_stale(fc)
    pl = plan(cfg, fc)
    branch >> [refresh_profile(), profiles_fresh()] >> pl
    reports(publish(pl))


dynamo_nightly()
