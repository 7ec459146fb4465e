"""Store load: the 5-minute DAG's steps while 100 node agents report telemetry to PostgreSQL.

100 agents, each a :class:`dynamo_pipeline.agent.telemetry.TelemetrySink` (the agent's own writer:
batched insert … on conflict do nothing, spool on failure) in a thread, spread over
``BENCH_LOAD_PROCS`` processes (default 2, one store engine each, as agents on separate nodes would
each hold their own connection), record ``BENCH_LOAD_BATCH`` events and flush every
``BENCH_LOAD_PERIOD_S`` seconds. Meanwhile the four steps of ``dynamo_5min`` (config → ingest of the
bundled samples → window refresh → overrun check) run against a fresh store database on the same
server, ``BENCH_LOAD_REPEAT`` times; the same steps also run with no agents, for reference. Reports
the telemetry throughput (rows/s written), the steps' median runtime with and without the load, and
checks that the events table holds exactly the events the agents recorded (none lost, none
duplicated: count and distinct ids). Loopback only; needs PostgreSQL (``DYNAMO_TEST_PG_URL``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.common import pg_url, timed
from dynamo_pipeline import pipeline
from dynamo_pipeline.config import load_settings
from dynamo_pipeline.store import open_store, upgrade

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "azure_llm_2023"
AGENTS = int(os.environ.get("BENCH_LOAD_AGENTS", 100))
PROCS = int(os.environ.get("BENCH_LOAD_PROCS", 2))
BATCH = int(os.environ.get("BENCH_LOAD_BATCH", 5))
PERIOD_S = float(os.environ.get("BENCH_LOAD_PERIOD_S", 0.2))
REPEAT = int(os.environ.get("BENCH_LOAD_REPEAT", 5))


def _agents(url: str, proc: int, n: int, spool_dir: str, stop, out) -> None:
    """``n`` agent threads in this process; puts (recorded, written, spooled, flush latencies) on ``out``."""
    from dynamo_pipeline.agent.telemetry import TelemetrySink

    store = open_store(url)
    res = []

    def agent(i: int) -> None:
        sink = TelemetrySink(store, f"node-{proc:02d}-{i:03d}", Path(spool_dir) / f"{proc}-{i}.jsonl")
        recorded, lat = 0, []
        while not stop.is_set():
            for _ in range(BATCH):
                sink.event("telemetry", clock_mhz=1980, power_w=650.0 + i, energy_j=130.0, window_s=PERIOD_S)
            recorded += BATCH
            t = time.perf_counter()
            sink.flush()
            lat.append(time.perf_counter() - t)
            time.sleep(PERIOD_S)
        for _ in range(50):  # drain: the store is up, so this empties queue and spool
            if sink.flush() and sink.pending() == 0 and sink.spooled_pending() == 0:
                break
            time.sleep(0.2)
        res.append((recorded, sink.written, sink.spooled, sink.spooled_pending(), lat))

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.dispose()
    out.put(res)


def _database(admin, name: str) -> str:
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    return admin.url.set(database=name).render_as_string(hide_password=False)


def main() -> None:
    base = pg_url()
    if not base:
        print("PostgreSQL not reachable: set DYNAMO_TEST_PG_URL (the load test runs on PostgreSQL only)")
        return
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    tag = uuid.uuid4().hex[:6]
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_load_"))
    made: list[str] = []
    k = [0]
    state: dict = {}

    def setup() -> None:
        k[0] += 1
        name = f"bench_load_{tag}_{k[0]}"
        made.append(name)
        state["url"] = _database(admin, name)
        upgrade(state["url"])
        inbox = tmp / f"inbox{k[0]}"
        inbox.mkdir()
        for f in SAMPLES.glob("*.csv.gz"):
            shutil.copy(f, inbox / f.name)
        state["inbox"] = inbox

    def steps() -> None:
        s = load_settings(None, database_url=state["url"])
        cfg = pipeline.run_config(s, {})
        new = pipeline.ingest_new_logs(s, state["inbox"])
        pipeline.refresh_windows(s, new["first_arrival_us"], new["last_arrival_us"])
        pipeline.check_overrun(datetime.now(timezone.utc), cfg["window_s"])

    try:
        idle, idle_all = timed(steps, repeat=REPEAT, setup=setup)
        print(f"{'dynamo_5min steps, no agents':44s} {idle:7.2f} s  (median of {REPEAT}: "
              f"{', '.join(f'{t:.2f}' for t in idle_all)})")

        agents_db = f"bench_load_{tag}_agents"
        made.append(agents_db)
        agents_url = _database(admin, agents_db)
        upgrade(agents_url)
        ctx = mp.get_context("spawn")
        stop, out = ctx.Event(), ctx.Queue()
        per = [AGENTS // PROCS + (1 if p < AGENTS % PROCS else 0) for p in range(PROCS)]
        procs = [ctx.Process(target=_agents, args=(agents_url, p, n, str(tmp / "spool"), stop, out))
                 for p, n in enumerate(per)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        time.sleep(3.0)  # agents connected and reporting before the steps start
        loaded, loaded_all = timed(steps, repeat=REPEAT, setup=setup)
        stop.set()
        res = [r for _ in procs for r in out.get(timeout=120)]
        span_s = time.perf_counter() - t0
        for p in procs:
            p.join()
        recorded = sum(r[0] for r in res)
        written = sum(r[1] for r in res)
        spooled = sum(r[2] for r in res)
        left = sum(r[3] for r in res)
        lat = sorted(x for r in res for x in r[4])
        with create_engine(agents_url).connect() as c:
            rows = c.execute(text("SELECT COUNT(*), COUNT(DISTINCT event_id), COUNT(DISTINCT node) FROM agent_events")).one()
        print(f"{'dynamo_5min steps, 100 agents reporting':44s} {loaded:7.2f} s  (median of {REPEAT}: "
              f"{', '.join(f'{t:.2f}' for t in loaded_all)}; {loaded / idle:.2f}× the unloaded run)")
        print(f"{'telemetry throughput':44s} {written / span_s:7.0f} rows/s  ({written} rows in {span_s:.1f} s, "
              f"{len(res)} agents, batches of {BATCH} every {PERIOD_S} s)")
        print(f"{'agent flush latency':44s} {statistics.median(lat) * 1e3:7.1f} ms median, "
              f"{lat[int(0.99 * (len(lat) - 1))] * 1e3:.1f} ms P99 ({len(lat)} flushes)")
        print(f"{'rows: recorded / in store / distinct ids':44s} {recorded} / {rows[0]} / {rows[1]}  "
              f"({rows[2]} nodes; {spooled} rows went through the spool, {left} left in it)")
        ok = recorded == rows[0] == rows[1] and left == 0 and rows[2] == AGENTS
        print(f"{'no telemetry lost or duplicated':44s} {'yes' if ok else 'NO'}")
    finally:
        admin.dispose()
        drop = create_engine(base, isolation_level="AUTOCOMMIT")
        with drop.connect() as c:
            for name in made:
                c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        drop.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
