"""The 5-minute DAG end to end (`dynamo_5min` with dag.test(), fresh SQLite metadata DB).

Each run ingests the bundled samples (28,185 requests) into a fresh store; beside it, the same four
library calls made directly (the floor Airflow's overhead is measured against, in the same run)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "azure_llm_2023"
_HOME = tempfile.mkdtemp(prefix="bench_dags_airflow_")
# Airflow reads these when first imported: set them before anything imports it.
os.environ.update({
    "AIRFLOW_HOME": _HOME,
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
})

from bench.common import timed  # noqa: E402
from dynamo_pipeline import pipeline  # noqa: E402
from dynamo_pipeline.config import load_settings  # noqa: E402
from dynamo_pipeline.store import upgrade  # noqa: E402

REPEAT = int(os.environ.get("BENCH_DAGS_REPEAT", 3))


def _fresh(tmp: Path, k: list[int]) -> tuple[str, Path]:
    k[0] += 1
    url = f"sqlite:///{tmp / f'store{k[0]}.db'}"
    upgrade(url)
    inbox = tmp / f"inbox{k[0]}"
    inbox.mkdir()
    for f in SAMPLES.glob("*.csv.gz"):
        (inbox / f.name).write_bytes(f.read_bytes())
    os.environ["AIRFLOW_VAR_DYNAMO_DATABASE_URL"] = url
    return url, inbox


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_dags_"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    med, _ = timed(lambda: subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                                          capture_output=True), repeat=1)
    print(f"{'airflow db migrate (fresh SQLite metadata)':48s} {med:7.2f} s")
    from airflow.dag_processing.dagbag import DagBag

    med, _ = timed(lambda: DagBag(dag_folder=str(ROOT / "dags")), repeat=1)
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["dynamo_5min"]
    print(f"{'DagBag parse of dags/':48s} {med:7.2f} s")
    logging.getLogger("airflow").setLevel(logging.WARNING)

    k = [0]
    state: dict = {}

    def setup():
        state["url"], state["inbox"] = _fresh(tmp, k)

    def direct():
        s = load_settings(None, database_url=state["url"])
        cfg = pipeline.run_config(s, {})
        new = pipeline.ingest_new_logs(s, state["inbox"])
        pipeline.refresh_windows(s, new["first_arrival_us"], new["last_arrival_us"])
        pipeline.check_overrun(datetime.now(timezone.utc), cfg["window_s"])

    floor, _ = timed(direct, repeat=REPEAT, setup=setup)
    print(f"{'the four steps called directly (floor)':48s} {floor:7.2f} s  (median of {REPEAT})")

    def run_dag():
        dr = dag.test(run_conf={"inbox": str(state["inbox"])})
        if dr.state != "success":
            raise RuntimeError(f"dynamo_5min ended {dr.state}")

    first, _ = timed(run_dag, repeat=1, setup=setup)
    print(f"{'dynamo_5min dag.test(), first run in process':48s} {first:7.2f} s")
    med, times = timed(run_dag, repeat=REPEAT, setup=setup)
    print(f"{'dynamo_5min dag.test(), end to end':48s} {med:7.2f} s  (median of {REPEAT}; "
          f"{med / floor:.1f}× the floor; budget 60 s, window 300 s)")


if __name__ == "__main__":
    main()
