"""The node agent in-process on the sim backend: applying, rejecting, stale fallback, hardware
errors, telemetry and acks in the store, the control endpoint, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from dynamo_pipeline.agent import agents_acknowledged
from dynamo_pipeline.agent.daemon import Agent, AgentServer
from dynamo_pipeline.agent.executor import SimExecutor, diff_instances
from dynamo_pipeline.agent.source import DirSource
from dynamo_pipeline.agent.telemetry import TelemetrySink
from dynamo_pipeline.config import AgentConfig, SLOConfig
from dynamo_pipeline.hardware import SimBackend
from dynamo_pipeline.hardware.nvml import NvmlBackend
from dynamo_pipeline.schedules.schema import sign
from dynamo_pipeline.store.tables.agent import AgentEvent
from tests.agent_schedules import KEY, make_schedule, publish


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make_agent(tmp_path, store, node="n1", backend=None, clock=None, **cfg):
    cfg.setdefault("flush_s", 0.05)
    backend = backend or SimBackend(n_gpus=8)
    sink = TelemetrySink(store, node, tmp_path / f"{node}.spool.jsonl")
    a = Agent(node, backend, DirSource(tmp_path / "sched"), sink, SimExecutor(), AgentConfig(**cfg), SLOConfig(),
              KEY, clock=clock or time.monotonic)
    return a, backend


def events(store, kind=None):
    with store.engine.connect() as c:
        q = select(AgentEvent.kind, AgentEvent.reason, AgentEvent.clock_mhz, AgentEvent.instance_id)
        if kind:
            q = q.where(AgentEvent.kind == kind)
        return [dict(r._mapping) for r in c.execute(q)]


def test_applies_schedule_clocks_executor_changes_and_ack(tmp_path, store):
    a, hw = make_agent(tmp_path, store)
    publish(tmp_path / "sched", make_schedule(1, ["n1", "n2"], planned=1410))
    a.poll_schedule()
    assert [hw.current_clock_mhz(g) for g in range(4)] == [1410] * 4
    assert hw.current_clock_mhz(4) == hw.card.clock_max_mhz  # not in any instance: untouched
    a.sink.flush()
    r = agents_acknowledged(store, 1, ["n1"], timeout_s=0)
    assert r.ok and r.applied == {"n1"}
    assert {e["clock_mhz"] for e in events(store, "applied")} == {1410}
    a.executor.close()
    assert [c["action"] for c in a.executor.executor.done] == ["start"]


def test_newer_schedule_replaces_and_diff_restarts_reshards_stops(tmp_path, store):
    a, hw = make_agent(tmp_path, store)
    publish(tmp_path / "sched", make_schedule(1, ["n1"], planned=1410))
    a.poll_schedule()
    publish(tmp_path / "sched", make_schedule(2, ["n1"], planned=1800))
    a.poll_schedule()
    assert a.schedule.version == 2 and hw.current_clock_mhz(0) == 1800
    old = make_schedule(1, ["n1"]).instances_on("n1")
    new = make_schedule(1, ["n2"]).instances_on("n2")
    assert [c["action"] for c in diff_instances(old, new)] == ["stop", "start"]
    resharded = [old[0].model_copy(update={"tp": 2, "gpu_ids": (0, 1)})]
    assert diff_instances(old, resharded)[0]["action"] == "reshard"


def test_rejects_tampered_schedule_and_keeps_last_good(tmp_path, store):
    a, hw = make_agent(tmp_path, store)
    publish(tmp_path / "sched", make_schedule(1, ["n1"], planned=1410))
    a.poll_schedule()
    doc = json.loads(sign(make_schedule(2, ["n1"], planned=1200), KEY).to_json())
    doc["schedule"]["pools"][0]["instances"][0]["clock_mhz"] = 1800  # changed after signing
    (tmp_path / "sched" / "schedule-000002.json").write_text(json.dumps(doc))
    a.poll_schedule()
    a.sink.flush()
    assert a.schedule.version == 1 and hw.current_clock_mhz(0) == 1410
    rej = events(store, "rejected")
    assert len(rej) == 1 and rej[0]["reason"].startswith("signature")
    r = agents_acknowledged(store, 2, ["n1"], timeout_s=0)
    assert not r.ok and "signature" in r.rejected["n1"]


def test_rejects_schedule_signed_under_another_key_and_garbage(tmp_path, store):
    a, hw = make_agent(tmp_path, store)
    publish(tmp_path / "sched", make_schedule(3, ["n1"]), key=b"some-other-key-0123456789")
    (tmp_path / "sched" / "junk.json").write_text("{not json")
    a.poll_schedule()
    a.sink.flush()
    assert a.schedule is None and hw.clock_changes == 0
    assert sorted(e["reason"].split(":")[0] for e in events(store, "rejected")) == ["invalid", "signature"]


def test_rejects_schedule_for_another_node(tmp_path, store):
    a, hw = make_agent(tmp_path, store, node="n1")
    publish(tmp_path / "sched", make_schedule(1, ["n7", "n8"]))
    a.poll_schedule()
    a.sink.flush()
    assert a.schedule is None and hw.clock_changes == 0
    assert events(store, "rejected")[0]["reason"].startswith("other_node")
    assert "n1" in agents_acknowledged(store, 1, ["n1"], timeout_s=0).rejected


def test_rejects_unsupported_clock(tmp_path, store):
    a, hw = make_agent(tmp_path, store)
    publish(tmp_path / "sched", make_schedule(1, ["n1"], planned=1410))
    a.poll_schedule()
    publish(tmp_path / "sched", make_schedule(2, ["n1"], clocks=(1200, 2100)))  # 2100 MHz: above the H100 top clock
    a.poll_schedule()
    a.sink.flush()
    assert a.schedule.version == 1 and hw.current_clock_mhz(0) == 1410
    [rej] = events(store, "rejected")
    assert rej["reason"].startswith("unsupported_clock") and "2100" in rej["reason"]


def test_stale_schedule_falls_back_to_top_clock_and_says_so(tmp_path, store):
    clock = FakeClock()
    a, hw = make_agent(tmp_path, store, clock=clock, stale_after_s=60)
    past = datetime.now(timezone.utc) - timedelta(hours=2)
    publish(tmp_path / "sched", make_schedule(1, ["n1"], planned=1200, valid_from=past, valid_s=3600))
    a.poll_schedule()
    assert hw.current_clock_mhz(0) == 1200
    a.control_step(False)
    clock.t += 59
    a.control_step(False)
    assert hw.current_clock_mhz(0) == 1200 and not a.fallback  # within the staleness bound
    clock.t += 2
    a.control_step(False)
    assert a.fallback and [hw.current_clock_mhz(g) for g in range(4)] == [1980] * 4
    a.sink.flush()
    [fb] = events(store, "fallback")
    assert "top clock" in fb["reason"]
    publish(tmp_path / "sched", make_schedule(2, ["n1"], planned=1410))  # a fresh schedule ends the fallback
    a.poll_schedule()
    assert not a.fallback and hw.current_clock_mhz(0) == 1410


class FakeNVML:
    """pynvml replaced at the module boundary: 8 GPUs; set_locked_clocks fails while ``broken``."""

    class NVMLError(Exception):
        def __init__(self, value):
            super().__init__(f"NVML error {value}")
            self.value = value

    NVML_CLOCK_SM = 1

    def __init__(self):
        self.broken = True
        self.clocks_broken = False
        self.locked = {}

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlDeviceGetCount(self): return 8
    def nvmlDeviceGetHandleByIndex(self, i): return i
    def nvmlDeviceGetName(self, h): return b"NVIDIA H100 80GB HBM3"
    def nvmlDeviceGetUUID(self, h): return f"GPU-{h}"
    def nvmlDeviceGetMemoryInfo(self, h): return type("M", (), {"total": 80 << 30})()
    def nvmlDeviceGetSupportedMemoryClocks(self, h): return [2619]
    def nvmlDeviceGetSupportedGraphicsClocks(self, h, mem):
        if self.clocks_broken:
            raise self.NVMLError(999)  # unknown error
        return list(range(1980, 200, -15))
    def nvmlDeviceGetPowerUsage(self, h): return 350_000
    def nvmlDeviceGetTotalEnergyConsumption(self, h): return 1_000_000

    def nvmlDeviceGetClockInfo(self, h, kind):
        return self.locked.get(h, 1980)

    def nvmlDeviceSetGpuLockedClocks(self, h, lo, hi):
        if self.broken:
            raise self.NVMLError(15)  # GPU is lost
        self.locked[h] = lo

    def nvmlDeviceResetGpuLockedClocks(self, h):
        if self.broken:
            raise self.NVMLError(4)  # no permission
        self.locked.pop(h, None)


def test_nvml_errors_never_kill_the_agent(tmp_path, store):
    nv = FakeNVML()
    a, _ = make_agent(tmp_path, store, backend=NvmlBackend(nvml=nv))
    publish(tmp_path / "sched", make_schedule(1, ["n1"], planned=1410))
    a.poll_schedule()  # every clock set fails
    a.telemetry_window()
    a.control_step(False)
    assert a.hw.errors >= 4 and a.schedule.version == 1 and nv.locked == {}
    a.sink.flush()
    assert len(events(store, "hardware_error")) == 1  # rate-limited, not one per failed call
    assert "fell off the bus" in events(store, "hardware_error")[0]["reason"]
    r = agents_acknowledged(store, 1, ["n1"], timeout_s=0)
    assert not r.ok and "clocks not set" in r.rejected["n1"]
    nv.broken = False  # the driver recovers: the next control step sets the clocks and acks
    a.control_step(False)
    assert nv.locked == {0: 1410, 1: 1410, 2: 1410, 3: 1410}
    a.sink.flush()
    assert agents_acknowledged(store, 1, ["n1"], timeout_s=0).ok
    publish(tmp_path / "sched", make_schedule(2, ["n1"], planned=1800))
    a.poll_schedule()
    assert nv.locked == {0: 1800, 1: 1800, 2: 1800, 3: 1800}
    a.shutdown()
    assert nv.locked == {}


def test_window_telemetry_reports_power_and_energy(tmp_path, store):
    clock = FakeClock()
    a, hw = make_agent(tmp_path, store, clock=clock)
    publish(tmp_path / "sched", make_schedule(1, ["n1"]))
    a.poll_schedule()
    for g in range(4):
        hw.set_utilisation(g, 0.5)
    a.telemetry_window()
    clock.t += 10
    a.telemetry_window()
    a.sink.flush()
    with store.engine.connect() as c:
        [(w, p, e)] = c.execute(select(AgentEvent.window_s, AgentEvent.power_w, AgentEvent.energy_j)
                                .where(AgentEvent.kind == "window")).all()
    assert w == pytest.approx(10) and e == pytest.approx(p * 10)
    assert 4 * hw.card.idle_w < p < 4 * 700


def test_control_endpoint_needs_bearer_token_and_triggers_fast_path(tmp_path, store):
    a, hw = make_agent(tmp_path, store, tick_s=60, poll_s=60)
    publish(tmp_path / "sched", make_schedule(1, ["n1"], planned=1200))
    srv = AgentServer(a, "127.0.0.1", 0, "s3cret-token").start()
    t = threading.Thread(target=a.run)
    t.start()
    try:
        base = f"http://127.0.0.1:{srv.port}"
        deadline = time.monotonic() + 5
        while a.schedule is None and time.monotonic() < deadline:
            time.sleep(0.01)
        body = json.dumps({"reason": "past_predicted", "instance_id": "n1-a"}).encode()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(base + "/signal", data=body, method="POST"))
        assert e.value.code == 401
        assert hw.current_clock_mhz(0) == 1200
        req = urllib.request.Request(base + "/signal", data=body, method="POST",
                                     headers={"Authorization": "Bearer s3cret-token"})
        assert urllib.request.urlopen(req).status == 202
        deadline = time.monotonic() + 2
        while hw.current_clock_mhz(0) != 1980 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert hw.current_clock_mhz(0) == 1980
        health = json.loads(urllib.request.urlopen(base + "/healthz").read())
        assert health["node"] == "n1" and health["version"] == 1
        metrics = urllib.request.urlopen(base + "/metrics").read().decode()
        assert 'dynamo_agent_fast_path_active{instance="n1-a",node="n1"} 1.0' in metrics
    finally:
        a.stop()
        t.join(5)
        srv.close()
    assert hw.current_clock_mhz(0) == hw.card.clock_max_mhz and hw._locked == {}


def test_sigterm_resets_clocks(tmp_path, store):
    a, hw = make_agent(tmp_path, store, tick_s=60, poll_s=0.05)
    publish(tmp_path / "sched", make_schedule(1, ["n1"], planned=1200))
    old = signal.signal(signal.SIGTERM, a.stop)
    try:
        t = threading.Thread(target=lambda: (time.sleep(0.3), os.kill(os.getpid(), signal.SIGTERM)))
        t.start()
        a.run()  # returns after SIGTERM
        t.join()
    finally:
        signal.signal(signal.SIGTERM, old)
    assert a.schedule.version == 1 and hw._locked == {}
    assert all(hw.current_clock_mhz(g) == hw.card.clock_max_mhz for g in range(8))
    assert any(e["reason"].startswith("shutdown") for e in events(store, "applied"))


def test_http_source_applies_served_schedule_and_engine_reader_scrapes(tmp_path, store):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from dynamo_pipeline.agent.engine_metrics import EngineMetricsReader
    from dynamo_pipeline.agent.source import HttpSource

    doc = sign(make_schedule(4, ["n1"], planned=1800), KEY).to_json().encode()
    metrics = b'# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name="m"} 40.0\n'

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            body = doc if self.path == "/schedule" else metrics
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        a, hw = make_agent(tmp_path, store)
        a.source = HttpSource(base + "/schedule")
        a.engine = EngineMetricsReader(base + "/metrics")
        a.poll_schedule()
        assert a.schedule.version == 4 and hw.current_clock_mhz(0) == 1800
        a.control_step(scrape=True)  # 40 waiting > 16: fast path
        assert a.last_sample.waiting == 40 and hw.current_clock_mhz(0) == 1980
    finally:
        srv.shutdown()


def test_override_episode_recorded_with_reason_and_duration(tmp_path, store):
    clock = FakeClock()
    a, hw = make_agent(tmp_path, store, clock=clock, fast_release_s=5)
    publish(tmp_path / "sched", make_schedule(1, ["n1"], planned=1200))
    a.poll_schedule()
    a.signal("past_predicted", "n1-a")
    a.control_step(False)
    assert hw.current_clock_mhz(0) == 1980
    clock.t += 3
    a.signal("past_predicted", "n1-a", active=False)
    a.control_step(False)  # clear from here on
    clock.t += 4.9
    a.control_step(False)
    assert hw.current_clock_mhz(0) == 1980
    clock.t += 0.1
    a.control_step(False)
    assert hw.current_clock_mhz(0) == 1200
    a.sink.flush()
    with store.engine.connect() as c:
        [(reason, dur)] = c.execute(select(AgentEvent.reason, AgentEvent.duration_s).where(AgentEvent.kind == "override")).all()
    assert reason == "past_predicted" and dur == pytest.approx(8.0)


def test_command_executor_gets_change_on_stdin_and_failures_are_reported(tmp_path, store):
    import sys

    from dynamo_pipeline.agent.executor import CommandExecutor, ExecutorWorker

    out = tmp_path / "changes.jsonl"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"
    ok = CommandExecutor(f"{sys.executable} -c \"{script}\"")
    bad = CommandExecutor(f"{sys.executable} -c \"import sys; sys.exit('engine refused')\"")
    seen = []
    w = ExecutorWorker(ok, lambda c, e: seen.append(e))
    w.submit({"action": "start", "instance_id": "i1", "tp": 4, "gpu_ids": [0, 1, 2, 3]})
    w.close(10)
    w2 = ExecutorWorker(bad, lambda c, e: seen.append(e))
    w2.submit({"action": "stop", "instance_id": "i1"})
    w2.close(10)
    assert json.loads(out.read_text())["instance_id"] == "i1"
    assert seen[0] is None and "engine refused" in seen[1]


def test_agent_command_does_not_import_heavy_libraries(tmp_path):
    import subprocess
    import sys

    code = ("import sys; sys.argv=['dynamo','--db','sqlite:///x.db','agent','run','--help'];"
            "import dynamo_pipeline.cli, dynamo_pipeline.agent.build, dynamo_pipeline.hardware;"
            "print(','.join(m for m in ('pandas','sklearn','airflow','prophet','pulp') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_store_source_reads_schedules_the_planner_published(tmp_path, store):
    from dynamo_pipeline.agent.source import StoreSource
    from dynamo_pipeline.schedules.store import publish_to_store

    publish_to_store(store, sign(make_schedule(1, ["n1"], planned=1200), KEY))
    publish_to_store(store, sign(make_schedule(2, ["n1"], planned=1410), KEY))
    a, hw = make_agent(tmp_path, store)
    a.source = StoreSource(store.url)
    a.poll_schedule()  # first read: the newest only
    assert a.schedule.version == 2 and hw.current_clock_mhz(0) == 1410
    publish_to_store(store, sign(make_schedule(3, ["n1"], planned=1800), KEY))
    a.poll_schedule()
    assert a.schedule.version == 3 and hw.current_clock_mhz(0) == 1800
    assert list(a.source.documents()) == []  # nothing new: nothing re-read
    a.source.store.dispose()


def test_agent_settings_from_env_and_bad_values_name_the_key(monkeypatch):
    from dynamo_pipeline.config import ConfigError, load_settings

    monkeypatch.setenv("DYNAMO_AGENT__TICK_S", "2.5")
    assert load_settings().agent.tick_s == 2.5
    with pytest.raises(ConfigError, match="agent.source"):
        load_settings(agent={"source": "ftp"})


def test_cli_agent_acks_reports_missing_and_rejected_nodes(tmp_path, store):
    from click.testing import CliRunner

    from dynamo_pipeline.cli import main

    sink = TelemetrySink(store, "n1", tmp_path / "s.jsonl")
    sink.ack(5, "applied")
    sink.flush()
    s2 = TelemetrySink(store, "n2", tmp_path / "s2.jsonl")
    s2.ack(5, "rejected", "other_node: not named")
    s2.flush()
    r = CliRunner().invoke(main, ["--db", store.url, "agent", "acks", "5", "--nodes", "n1,n2,n3"])
    assert r.exit_code == 1 and "applied 1, rejected 1, missing 1" in r.output
    assert "rejected by n2: other_node" in r.output and "no answer from n3" in r.output
    r = CliRunner().invoke(main, ["--db", store.url, "agent", "acks", "5", "--nodes", "n1"])
    assert r.exit_code == 0, r.output


def test_schedule_checked_again_when_nvml_cannot_list_clocks_not_rejected(tmp_path, store):
    nv = FakeNVML()
    nv.broken, nv.clocks_broken = False, True
    a, _ = make_agent(tmp_path, store, backend=NvmlBackend(nvml=nv))
    publish(tmp_path / "sched", make_schedule(1, ["n1"], planned=1410))
    a.poll_schedule()
    assert a.schedule is None and a.status.rejected == 0 and a.hw.errors >= 1
    nv.clocks_broken = False
    a.poll_schedule()  # the file did not change; the deferred document is checked again
    assert a.schedule.version == 1 and nv.locked[0] == 1410


def test_engine_readers_per_instance_from_url_template():
    from dynamo_pipeline.agent.build import engine_readers

    insts = make_schedule(1, ["n1", "n2"]).instances_on("n1") + make_schedule(1, ["n2"]).instances_on("n2")
    of = engine_readers("http://127.0.0.1:80{first_gpu:02d}/{instance_id}/metrics")
    assert of(insts[0]).url == "http://127.0.0.1:8000/n1-a/metrics"
    assert of(insts[0]) is of(insts[0]) and of(insts[1]).url.endswith("/n2-a/metrics")
    shared = engine_readers("http://127.0.0.1:8000/metrics")
    assert shared.url == "http://127.0.0.1:8000/metrics"


def test_schedule_published_ahead_waits_for_its_window(tmp_path, store):
    a, hw = make_agent(tmp_path, store)
    publish(tmp_path / "sched", make_schedule(1, ["n1"], planned=1200))
    start = datetime.now(timezone.utc) + timedelta(minutes=5)
    publish(tmp_path / "sched", make_schedule(2, ["n1"], planned=1800, valid_from=start))
    a.poll_schedule()
    assert a.schedule.version == 1 and hw.current_clock_mhz(0) == 1200
    a.wall = lambda: start + timedelta(seconds=1)
    a.poll_schedule()  # no file changed: the pending version starts on time
    assert a.schedule.version == 2 and hw.current_clock_mhz(0) == 1800
