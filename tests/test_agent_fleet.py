"""Agents as separate processes against one PostgreSQL store, and telemetry across a store outage.

The fleet test starts 8 ``python -m dynamo_pipeline agent run --backend sim --source store``
processes, publishes a signed schedule to the store (the planner's ``publish_to_store``), and measures from the store's ``agent_acks`` that
every node applied it within 2 s; then a second schedule replaces it; SIGTERM stops each one
cleanly (clocks reset, recorded in its telemetry). The outage test puts a TCP proxy between an agent's
telemetry sink and PostgreSQL, closes it for a while, and checks every event arrives exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from dynamo_pipeline.agent import agents_acknowledged
from dynamo_pipeline.agent.telemetry import TelemetrySink
from dynamo_pipeline.store import open_store, upgrade
from dynamo_pipeline.store.tables.agent import AgentAck, AgentEvent
from dynamo_pipeline.schedules.schema import sign
from dynamo_pipeline.schedules.store import publish_to_store
from tests.agent_schedules import KEY, make_schedule

ROOT = Path(__file__).resolve().parent.parent
N_AGENTS = 8


@pytest.mark.postgres
def test_eight_agents_apply_published_schedules_within_2s(pg_url, tmp_path):
    upgrade(pg_url)
    store = open_store(pg_url)
    nodes = [f"gpu-{i:02d}" for i in range(N_AGENTS)]
    env = {**os.environ, "DYNAMO_SCHEDULE_KEY": KEY.decode(), "DYNAMO_AGENT__POLL_S": "0.1",
           "DYNAMO_AGENT__FLUSH_S": "0.5", "DYNAMO_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "dynamo_pipeline", "--db", pg_url, "agent", "run", "--node", n,
                               "--backend", "sim", "--source", "store", "--port", "0"],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in nodes]
    try:
        # wait until every agent is up (its banner), so start-up time is not counted as apply time
        for p in procs:
            line = p.stderr.readline()
            assert "healthz" in line, line + p.stderr.read()
        t0 = time.monotonic()
        publish_to_store(store, sign(make_schedule(1, nodes, planned=1410), KEY))
        r1 = agents_acknowledged(store, 1, nodes, timeout_s=10, poll_s=0.05)
        assert r1.ok, r1
        assert r1.waited_s <= 2.0, f"slowest node acked after {r1.waited_s:.2f} s"
        publish_to_store(store, sign(make_schedule(2, nodes, planned=1800), KEY))
        r2 = agents_acknowledged(store, 2, nodes, timeout_s=10, poll_s=0.05)
        assert r2.ok and r2.waited_s <= 2.0, r2
        with store.engine.connect() as c:
            clocks = dict(c.execute(select(AgentEvent.clock_mhz, func.count()).where(AgentEvent.kind == "applied")
                                    .group_by(AgentEvent.clock_mhz)).all())
        assert clocks[1410] == N_AGENTS and clocks[1800] == N_AGENTS  # one instance per node, each schedule once
        print(f"\napply latency: v1 {r1.waited_s:.3f} s, v2 {r2.waited_s:.3f} s, since publish {time.monotonic() - t0:.2f} s")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=20) for p in procs]
    assert [p.returncode for p in procs] == [0] * N_AGENTS, outs
    with store.engine.connect() as c:
        shut = c.execute(select(func.count()).where(AgentEvent.kind == "applied", AgentEvent.reason.like("shutdown%"),
                                                    AgentEvent.reason.like("%0 could not be reset"))).scalar()
    assert shut == N_AGENTS
    store.dispose()


class Proxy:
    """A TCP forwarder to ``(host, port)`` that can be taken down (connections cut) and brought back."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                c.close()
                continue
            s = socket.create_connection(self.target)
            self.conns += [c, s]
            threading.Thread(target=self._pipe, args=(c, s), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c), daemon=True).start()

    def down(self) -> None:
        self.up = False
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.conns.clear()

    def close(self) -> None:
        self.down()
        self.listener.close()


@pytest.mark.postgres
def test_store_outage_buffers_telemetry_then_flushes_exactly_once(pg_url, tmp_path):
    upgrade(pg_url)
    u = make_url(pg_url)
    proxy = Proxy(u.host or "127.0.0.1", u.port or 5432)
    via_proxy = u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    store = open_store(via_proxy)
    direct = open_store(pg_url)
    sink = TelemetrySink(store, "n1", tmp_path / "spool.jsonl")
    try:
        ids = [sink.event("applied", clock_mhz=1410)]
        sink.ack(1, "applied")
        assert sink.flush()
        proxy.down()  # the store goes away
        for i in range(3):  # three flush periods while it is away
            ids += [sink.event("window", window_s=10.0, power_w=400.0 + i, energy_j=4000.0 + i) for _ in range(5)]
            sink.ack(2 + i, "applied")
            assert not sink.flush()
        assert sink.spooled_pending() == 18 and (tmp_path / "spool.jsonl").exists()
        # a batch whose commit landed although the agent saw an error: it sits in the spool AND the store
        spooled_line = (tmp_path / "spool.jsonl").read_text().splitlines()[0]
        with direct.engine.begin() as c:
            row = json.loads(spooled_line)
            row.pop("table")
            c.execute(AgentEvent.__table__.insert(), [row])
        proxy.up = True  # the store comes back
        ids.append(sink.event("applied", clock_mhz=1800))
        assert sink.flush()
        assert not (tmp_path / "spool.jsonl").exists() and sink.spooled_pending() == 0
        assert sink.flush()  # nothing left: flushing again adds nothing
        with direct.engine.connect() as c:
            got = [r[0] for r in c.execute(select(AgentEvent.event_id))]
            acks = sorted(r[0] for r in c.execute(select(AgentAck.version)))
        assert sorted(got) == sorted(ids) and len(got) == len(set(got)) == 17
        assert acks == [1, 2, 3, 4]
    finally:
        proxy.close()
        store.dispose()
        direct.dispose()
