"""The profiling DAG on Airflow's CeleryExecutor, for real: Redis as broker, PostgreSQL as Airflow's
metadata DB (its own database), Celery's result backend and the project's store (another database).

The module starts an ``airflow api-server`` (Airflow 3 workers report to its execution API), one
``airflow celery worker --queues default`` (planning) and one ``airflow celery worker --queues gpu``,
then runs ``airflow dags test dynamo_profiling --use-executor``: every task instance goes through
the broker to a worker, the shards to the ``gpu`` worker. A second run routes the shards to a queue
no worker listens on (``gpu-A100-SXM``: ``DYNAMO_GPU_QUEUES=A100-SXM``) and shows they stay queued in
the broker instead of running elsewhere. Everything runs in subprocesses (no airflow import here);
the processes, the Redis db and both databases are removed at the end.

Needs Redis at ``DYNAMO_TEST_REDIS_URL`` (default redis://127.0.0.1:6379/13) and PostgreSQL at
``DYNAMO_TEST_PG_URL``; skipped without them, except under ``CI=true`` where a missing service fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("DYNAMO_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
PG_URL = os.environ.get("DYNAMO_TEST_PG_URL", "")
TINY = {"classes": ["SS", "LL"], "tp": [8], "clocks_mhz": [1200, 1980], "n_requests": 30, "shards": 2}


def _unavailable(why: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why} (CI=true: the Celery test must run; start the service)")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pred, timeout_s: float, what: str, logs=()) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{Path(p).read_text()[-3000:]}" for p in logs if Path(p).exists())
    raise AssertionError(f"{what} not ready after {timeout_s} s\n{tails}")


@pytest.fixture(scope="module")
def celery_cluster(tmp_path_factory):
    if not PG_URL:
        _unavailable("set DYNAMO_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test to run the Celery test")
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    try:
        r.ping()
    except redis.ConnectionError as e:
        _unavailable(f"Redis at {REDIS_URL} is not reachable: {e}")
    r.flushdb()
    tag = uuid.uuid4().hex[:8]
    meta_db, store_db = f"airflow_celery_{tag}", f"dynamo_celery_{tag}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {meta_db}"))
        c.execute(text(f"CREATE DATABASE {store_db}"))
    base = PG_URL.rsplit("/", 1)[0]
    home = tmp_path_factory.mktemp("airflow-celery")
    port = _free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4", "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{base}/{meta_db}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"{base}/{meta_db}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": f"{base}/{meta_db}",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex * 2,
        "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW_VAR_DYNAMO_DATABASE_URL": f"{base}/{store_db}",
        "DYNAMO_PROFILES_ROOT": str(home / "profiles"),
        "PYTHONPATH": str(ROOT),
    }
    # A100 nodes get their own queue; no worker listens on it here. Every component must see the same
    # value (the DAG's mapped tasks per queue are fixed when the file is parsed).
    env["DYNAMO_GPU_QUEUES"] = "A100-SXM"
    airflow = [sys.executable, "-m", "airflow"]
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> Path:
        log = home / f"{name}.log"
        procs.append(subprocess.Popen([*airflow, *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        return log

    try:
        m = subprocess.run([*airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=180)
        assert m.returncode == 0, m.stdout[-2000:] + m.stderr[-2000:]
        u = subprocess.run([sys.executable, "-m", "dynamo_pipeline", "--db", env["AIRFLOW_VAR_DYNAMO_DATABASE_URL"],
                            "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
        assert u.returncode == 0, u.stderr
        logs = {"api": start("api", "api-server"),
                "default": start("worker-default", "celery", "worker", "--queues", "default", "--concurrency", "1",
                                 "--celery-hostname", f"planner-{tag}@%h"),
                "gpu": start("worker-gpu", "celery", "worker", "--queues", "gpu", "--concurrency", "2",
                             "--celery-hostname", f"gpu-{tag}@%h")}
        import urllib.request

        def api_up() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).status == 200
            except OSError:
                return False

        _wait(api_up, 90, "airflow api-server", logs.values())
        for q in ("default", "gpu"):
            _wait(lambda q=q: " ready." in logs[q].read_text(), 90, f"celery worker on queue {q}", logs.values())
        yield {"env": env, "home": home, "logs": logs, "redis": r, "store_url": env["AIRFLOW_VAR_DYNAMO_DATABASE_URL"]}
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        r.flushdb()
        with admin.connect() as c:
            for db in (meta_db, store_db):
                c.execute(text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        admin.dispose()


def _dags_test(cluster, conf: dict, timeout_s: float, extra_env: dict | None = None):
    cmd = [sys.executable, "-m", "airflow", "dags", "test", "dynamo_profiling", "--use-executor", "-c", json.dumps(conf)]
    return subprocess.run(cmd, env={**cluster["env"], **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout_s)


def _meta(cluster, sql: str, **params):
    eng = create_engine(cluster["env"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    try:
        with eng.connect() as c:
            return c.execute(text(sql), params).all()
    finally:
        eng.dispose()


def test_profiling_dag_runs_end_to_end_through_celery_with_shards_on_the_gpu_worker(celery_cluster):
    t0 = time.monotonic()
    r = _dags_test(celery_cluster, {**TINY, "campaign": "celery1"}, timeout_s=180)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "state=success, run_type=manual" in r.stdout + r.stderr
    tis = _meta(celery_cluster, "SELECT task_id, map_index, state, queue, executor FROM task_instance "
                                "WHERE dag_id = 'dynamo_profiling' ORDER BY task_id, map_index")
    shards = [t for t in tis if t.task_id == "shard_gpu"]
    assert [(t.map_index, t.state, t.queue) for t in shards] == [(0, "success", "gpu"), (1, "success", "gpu")]
    assert {t.queue for t in tis if not t.task_id.startswith("shard_")} == {"default"}
    # the A100 queue's mapped task expanded over no job: skipped, never sent anywhere
    assert {(t.state, t.queue) for t in tis if t.task_id == "shard_gpu_A100_SXM"} == {("skipped", "gpu-A100-SXM")}
    assert all(t.state == "success" for t in tis if t.task_id != "shard_gpu_A100_SXM")
    # the shard tasks ran in the gpu worker, the others in the planning worker
    gpu_log, default_log = (celery_cluster["logs"][q].read_text() for q in ("gpu", "default"))
    assert "shard_gpu" in gpu_log and "shard_gpu" not in default_log
    assert "task_id='merge'" in default_log or "merge" in default_log
    eng = create_engine(celery_cluster["store_url"])
    with eng.connect() as c:
        versions = c.execute(text("SELECT profile_version, COUNT(*) FROM profiles GROUP BY 1")).all()
    eng.dispose()
    assert versions == [("celery1", 44)]
    prov = json.loads((celery_cluster["home"] / "profiles" / "H100-SXM" / "Llama-2-70B.csv.provenance.json").read_text())
    assert prov["shard_runs"] == {"celery1-s1of2": 22, "celery1-s2of2": 22}
    print(f"celery end-to-end run: {time.monotonic() - t0:.1f} s")


def test_task_on_a_queue_without_worker_stays_queued_and_never_runs_elsewhere(celery_cluster):
    queue = "gpu-A100-SXM"
    cmd = [sys.executable, "-m", "airflow", "dags", "test", "dynamo_profiling", "--use-executor", "-c",
           json.dumps({**TINY, "campaign": "orphan", "gpus": ["A100-SXM"]})]
    log = celery_cluster["home"] / "orphan.log"
    p = subprocess.Popen(cmd, env=celery_cluster["env"], stdout=log.open("w"),
                         stderr=subprocess.STDOUT, start_new_session=True)
    sql = "SELECT map_index, state, queue FROM task_instance WHERE task_id = 'shard_gpu_A100_SXM' AND map_index >= 0"
    try:
        _wait(lambda: len(_meta(celery_cluster, sql)) == 2 and celery_cluster["redis"].llen(queue) == 2, 120,
              "two shard messages on the gpu-A100-SXM queue", [log])
        time.sleep(10)  # a worker on another queue would have picked them up by now (the first test took ~3 s a shard)
        assert sorted(_meta(celery_cluster, sql)) == [(0, "queued", queue), (1, "queued", queue)]
        assert celery_cluster["redis"].llen(queue) == 2  # both wait in the broker for a gpu-A100-SXM worker
        assert p.poll() is None  # the run is still waiting, not finished or failed
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)
    eng = create_engine(celery_cluster["store_url"])
    with eng.connect() as c:
        assert c.execute(text("SELECT COUNT(*) FROM profiles WHERE profile_version LIKE 'orphan%'")).scalar() == 0
    eng.dispose()
    assert "shard_gpu_A100_SXM" not in celery_cluster["logs"]["gpu"].read_text()
    assert "shard_gpu_A100_SXM" not in celery_cluster["logs"]["default"].read_text()
