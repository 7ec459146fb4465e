"""# dynamo_reports — hourly reports

Every hour: run every SQL report in `sql/` over the trailing `lookback_h` hours (default 24) ending
at the run's data interval end, and write CSV and PNG files under
`$DYNAMO_HOME/reports/hourly/<end>` (the `dynamo_reports` Asset). New reports are new `.sql` files:
this DAG needs no change for them. `dynamo pipeline reports` and `dynamo report NAME` run the same.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Param, dag, get_current_context, task

from dynamo_pipeline import orchestration as common
from dynamo_pipeline import pipeline


@dag(
    dag_id="dynamo_reports",
    schedule="@hourly",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=50),
    default_args={**common.DEFAULT_ARGS, "execution_timeout": timedelta(minutes=30)},
    params={"lookback_h": Param(24, type="integer", minimum=1, description="Hours of history each report covers.")},
    tags=["dynamo", "reports"],
    doc_md=__doc__,
)
def dynamo_reports():
    @task(inlets=[common.WINDOW_LOADS], outlets=[common.REPORTS])
    def reports() -> dict:
        """Write every SQL report for the trailing window as CSV and PNG."""
        ctx = get_current_context()
        s = common.settings()
        until = ctx["data_interval_end"]
        since = until - timedelta(hours=int(ctx["params"]["lookback_h"]))
        out = Path(s.home) / "reports" / "hourly" / until.strftime("%Y-%m-%dT%H%M")
        return pipeline.write_reports(s, out, int(since.timestamp()), int(until.timestamp()))

    reports()


dynamo_reports()
