"""The Airflow DAGs: integrity (DagBag imports, no cycles, retries, timeouts, tags, docs) and every DAG
run end to end with ``dag.test()`` on a fresh SQLite metadata DB against a test store loaded from the
bundled samples.

Airflow reads its configuration when first imported, so this module sets ``AIRFLOW_HOME`` (a fresh
temporary folder) and the other ``AIRFLOW__*`` variables at import time, before anything imports
airflow; the metadata DB is migrated once per module with ``airflow db migrate``. Tests that import
no airflow are unaffected (the variables only name a temporary folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.store import open_store, upgrade

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"
SAMPLES = ROOT / "samples" / "azure_llm_2023"
EXPECTED = {"dynamo_5min", "dynamo_nightly", "dynamo_reports", "dynamo_profiling"}
TEST_KEY = "dag-test-schedule-key-0123456789abcdef"

if "airflow" in sys.modules and not os.environ.get("AIRFLOW_HOME", "").startswith(tempfile.gettempdir()):
    raise RuntimeError("airflow was imported before tests/test_dags.py could point AIRFLOW_HOME at a temporary "
                       "folder; import airflow only inside the tests that need it")
_HOME = tempfile.mkdtemp(prefix="dynamo-airflow-test-")
AIRFLOW_ENV = {
    "AIRFLOW_HOME": _HOME,
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
}
os.environ.update(AIRFLOW_ENV)

pytest.importorskip("airflow", reason="apache-airflow is not installed: install requirements.lock")


@pytest.fixture(scope="module")
def airflow_db():
    """A fresh, migrated SQLite metadata DB for this module."""
    env = {**os.environ, **AIRFLOW_ENV, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, f"airflow db migrate failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return Path(_HOME) / "airflow.db"


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture
def test_store(tmp_path, monkeypatch):
    """A migrated SQLite store, handed to the DAGs the way production does: an Airflow Variable
    (here from the environment), and an inbox holding the bundled samples."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for f in SAMPLES.glob("*.csv.gz"):
        (inbox / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("AIRFLOW_VAR_DYNAMO_DATABASE_URL", url)
    # the signing key reaches the publish task as an Airflow Variable, never through DYNAMO_SCHEDULE_KEY
    monkeypatch.delenv("DYNAMO_SCHEDULE_KEY", raising=False)
    monkeypatch.setenv("AIRFLOW_VAR_DYNAMO_SCHEDULE_KEY", TEST_KEY)
    monkeypatch.setenv("DYNAMO_HOME", str(tmp_path / "home"))
    store = open_store(url)
    yield store, inbox, tmp_path / "home"
    store.dispose()


def _samples_rows() -> int:
    return sum(len(pd.read_csv(f)) for f in SAMPLES.glob("*.csv.gz"))


def _xcom(dag_run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as s:
        rows = s.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id,
                                            key="return_value")).all()
        assert len(rows) == 1, f"expected one return value of {task_id}, got {len(rows)}"
        return XComModel.deserialize_value(rows[0])


def test_dagbag_imports_every_dag_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert EXPECTED <= set(dagbag.dags)


def test_dags_have_no_cycles_tags_docs_and_retries_with_timeouts_on_every_task(dagbag):
    for dag_id in EXPECTED:
        dag = dagbag.dags[dag_id]
        dag.check_cycle()  # raises on a cycle
        assert "dynamo" in dag.tags and len(dag.tags) >= 2, dag_id
        assert dag.doc_md and dag.doc_md.startswith(f"# {dag_id}"), dag_id
        assert dag.catchup is False and dag.max_active_runs == 1, dag_id
        for t in dag.tasks:
            assert t.execution_timeout is not None and t.execution_timeout > timedelta(0), f"{dag_id}.{t.task_id}"
            if t.task_id not in ("overrun", "failed"):  # the overrun report must not run again after the window passed
                assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


def test_5min_dag_runs_every_5_minutes_one_at_a_time_and_reports_after_failures(dagbag):
    dag = dagbag.dags["dynamo_5min"]
    assert dag.schedule == timedelta(minutes=5)
    assert [t.task_id for t in dag.topological_sort()] == ["config", "ingest", "windows", "forecast", "plan",
                                                                  "publish", "acks", "overrun", "failed"]
    assert dag.get_task("overrun").trigger_rule == "all_done"
    assert {o.name for o in dag.get_task("windows").outlets} == {"dynamo_window_loads"}


def test_5min_dag_ingests_forecasts_plans_publishes_a_signed_schedule_and_checks_overrun(dagbag, test_store):
    from dynamo_pipeline.schedules.schema import verify

    store, inbox, home = test_store
    dag = dagbag.dags["dynamo_5min"]
    weights = {"energy": 1.0, "carbon": 0.5, "cost": 0.0}
    dr = dag.test(run_conf={"inbox": str(inbox), "slo_overrides": {"ttft_p99_s": 0.5}, "servers": 8,
                            "objective_weights": weights})
    assert dr.state == "success"
    with store.engine.connect() as c:
        n_req = c.execute(text("SELECT COUNT(*) FROM requests")).scalar()
        n_win = c.execute(text("SELECT SUM(arrivals) FROM window_loads")).scalar()
    assert n_req == _samples_rows() and n_win == n_req
    assert _xcom(dr, "config")["slo"]["ttft_p99_s"] == 0.5
    loads = _xcom(dr, "windows")
    assert loads["latest_window_start_s"] is not None and loads["latest_arrivals"] > 0
    fc = _xcom(dr, "forecast")
    seen = {c for c, n in loads["latest_arrivals_per_class"].items() if n > 0}
    assert fc["run_id"] is not None and set(fc["upper_rps"]) >= seen
    pl = _xcom(dr, "plan")
    # the planner got the forecast's upper rates and the run's weights and SLOs
    assert pl["load_source"] == "forecast" and pl["loads_rps"] == fc["upper_rps"]
    assert pl["objective_weights"] == weights and pl["slo"]["ttft_p99_s"] == 0.5
    pub = _xcom(dr, "publish")
    signed = Path(pub["path"]).read_text()
    assert verify(signed, TEST_KEY.encode()).version == pub["version"] and pub["plan_ids"] == [pl["plan_id"]]
    assert _xcom(dr, "acks")["message"] == "no agents to wait for"
    over = _xcom(dr, "overrun")
    assert over["overran"] is False and 0 < over["elapsed_s"] < 300

    # the next run finds nothing new in the inbox: no second ingest of the same files
    dr2 = dag.test(run_conf={"inbox": str(inbox), "servers": 8})
    assert dr2.state == "success"
    assert _xcom(dr2, "ingest")["files_ingested"] == []
    assert _xcom(dr2, "publish")["version"] == pub["version"] + 1
    with store.engine.connect() as c:
        assert c.execute(text("SELECT COUNT(*) FROM requests")).scalar() == n_req


def test_5min_dag_rejects_invalid_params_before_running(dagbag, test_store):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError):
        dagbag.dags["dynamo_5min"].test(run_conf={"objective_weights": {"energy": -1}})


def test_5min_dag_fails_the_acks_task_when_a_configured_agent_never_acknowledges(dagbag, test_store):
    store, inbox, _ = test_store
    dr = dagbag.dags["dynamo_5min"].test(run_conf={"inbox": str(inbox), "servers": 8, "nodes": ["node-absent"],
                                                   "ack_timeout_s": 0.5})
    assert dr.state == "failed"
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["publish"] == "success" and states["acks"] == "failed" and states["overrun"] == "success"
    assert states["failed"] == "failed"


def test_nightly_dag_trains_forecasts_plans_a_day_publishes_and_writes_reports(dagbag, test_store):
    store, inbox, home = test_store
    dr = dagbag.dags["dynamo_nightly"].test(run_conf={"inbox": str(inbox), "report_since": "2023-11-16",
                                                      "report_until": "2023-11-17", "servers": 4})
    assert dr.state == "success"
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    # the shipped profile is fresh: the branch skips the re-profiling
    assert states["refresh_profile"] == "skipped" and states["profiles_fresh"] == "success"
    assert _xcom(dr, "lengths")["trained"] is True
    fc = _xcom(dr, "forecast")
    assert fc["horizon"] == "day_ahead" and len(fc["peaks_rps"]) == 48
    pl = _xcom(dr, "plan")
    assert pl["windows"] == 48 and len(set(pl["plan_ids"])) == 48 and pl["max_servers_used"] <= 4
    pub = _xcom(dr, "publish")
    assert pub["plan_ids"] == pl["plan_ids"] and pub["valid_until_s"] - pub["valid_from_s"] == 48 * 1800
    out = home / "reports" / "nightly" / "2023-11-16"
    load = pd.read_csv(out / "load_by_class_day.csv")
    assert load["arrivals"].sum() == _samples_rows()
    assert (out / "load_by_class_day.png").stat().st_size > 1000
    quality = pd.read_csv(out / "ingest_quality.csv")
    assert len(quality) == 2 and quality["rows_read"].sum() == _samples_rows()


def test_reports_dag_writes_every_sql_report(dagbag, test_store):
    store, inbox, home = test_store
    from dynamo_pipeline.pipeline import ingest_new_logs

    ingest_new_logs(load_settings(None, database_url=store.url), inbox)
    dr = dagbag.dags["dynamo_reports"].test(run_conf={"lookback_h": 24 * 365 * 10})
    assert dr.state == "success"
    res = _xcom(dr, "reports")
    from dynamo_pipeline.reports import available

    assert set(res["files"]) == set(available())
    assert res["rows"]["load_by_class_day"] > 0
    for paths in res["files"].values():
        assert all(Path(p).exists() for p in paths)


TINY_GRID = {"classes": ["SS", "LL"], "tp": [8], "clocks_mhz": [1200, 1980], "n_requests": 30}


def test_profiling_dag_maps_one_task_per_model_gpu_shard_and_merges_one_version(dagbag, test_store, tmp_path,
                                                                                monkeypatch):
    store, _, _ = test_store
    monkeypatch.setenv("DYNAMO_PROFILES_ROOT", str(tmp_path / "profiles"))
    dag = dagbag.dags["dynamo_profiling"]
    assert {t.queue for t in dag.tasks if t.task_id.startswith("shard")} == {"gpu"}
    assert dag.get_task("plan").queue == dag.get_task("merge").queue == "default"
    dr = dag.test(run_conf={**TINY_GRID, "shards": 2, "campaign": "t1"})
    assert dr.state == "success"
    jobs = _xcom_mapped(dr, "shard_gpu")
    assert sorted(j["shard"] for j in jobs) == ["1/2", "2/2"] and {tuple(j["classes"]) for j in jobs} == {("SS",), ("LL",)}
    prov = _xcom(dr, "merge")
    assert prov[0]["profile_version"] == "t1" and prov[0]["points"] == 44
    with store.engine.connect() as c:
        versions = c.execute(text("SELECT profile_version, COUNT(*) FROM profiles GROUP BY 1")).all()
    assert versions == [("t1", 44)]
    assert len(pd.read_csv(tmp_path / "profiles" / "H100-SXM" / "Llama-2-70B.csv")) == 44


def _xcom_mapped(dag_run, task_id: str) -> list:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as s:
        rows = s.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id,
                                            key="return_value", map_indexes=None)).all()
        return [XComModel.deserialize_value(r) for r in rows]


def test_profiling_dag_retries_a_failed_shard_alone(dagbag, test_store, tmp_path, monkeypatch):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from dynamo_pipeline.profiling import shards

    monkeypatch.setenv("DYNAMO_PROFILES_ROOT", str(tmp_path / "profiles"))
    real, calls = shards.run_shard, []

    def flaky(*a, **k):  # shard 2/2 loses its node once
        calls.append(a[5:7])
        if a[5:7] == (2, 2) and calls.count((2, 2)) == 1:
            raise RuntimeError("GPU node lost")
        return real(*a, **k)

    monkeypatch.setattr(shards, "run_shard", flaky)
    dag = dagbag.dags["dynamo_profiling"]
    dr = dag.test(run_conf={**TINY_GRID, "shards": 2, "campaign": "t2"})
    assert dr.state == "success"
    with create_session() as s:
        tries = dict(s.query(TaskInstance.map_index, TaskInstance.try_number)
                     .filter(TaskInstance.run_id == dr.run_id, TaskInstance.task_id == "shard_gpu").all())
    assert tries == {0: 1, 1: 2}  # only the failed shard ran again
    assert sorted(calls) == [(1, 2), (2, 2), (2, 2)]
    assert _xcom(dr, "merge")[0]["points"] == 44
