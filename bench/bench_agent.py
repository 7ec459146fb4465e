"""Node agent: fast-path reaction (signal to clock set) on the sim backend, and idle RSS and CPU.

Reaction is timed two ways, 200 episodes each, on an agent whose loop runs in its own thread:
*pushed* — a fast-path signal arrives through :meth:`Agent.signal` (what ``POST /signal`` calls);
*scraped* — a local fake vLLM endpoint starts reporting a waiting queue over the bound and the
agent sees it at its next scrape (every ``fast_tick_s``). The clock counts from the signal to the
moment the sim backend's ``set_locked_clocks`` returned with the top clock on the instance's first
GPU. Idle cost: a real ``python -m dynamo_pipeline agent run --backend sim`` process holding an
applied schedule (a SQLite store, directory source), measured from /proc over ``IDLE_S`` seconds:
RSS (VmRSS) and CPU (utime+stime) as a percentage of one core; once without an engine endpoint, once
scraping a fake vLLM endpoint every ``fast_tick_s``.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.common import timed
from dynamo_pipeline.agent.daemon import Agent
from dynamo_pipeline.agent.engine_metrics import EngineMetricsReader, parse
from dynamo_pipeline.agent.executor import SimExecutor
from dynamo_pipeline.agent.source import DirSource
from dynamo_pipeline.agent.telemetry import TelemetrySink
from dynamo_pipeline.config import AgentConfig, SLOConfig
from dynamo_pipeline.hardware import SimBackend
from dynamo_pipeline.store import open_store, upgrade

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.agent_schedules import KEY, make_schedule, publish  # noqa: E402

EPISODES = int(os.environ.get("BENCH_AGENT_EPISODES", 200))
IDLE_S = float(os.environ.get("BENCH_AGENT_IDLE_S", 20))

VLLM = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{model_name="m"}} 4.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{model_name="m"}} {waiting}
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{le="0.1",model_name="m"}} 10.0
vllm:time_to_first_token_seconds_bucket{{le="+Inf",model_name="m"}} 10.0
vllm:time_to_first_token_seconds_count{{model_name="m"}} 10.0
vllm:time_to_first_token_seconds_sum{{model_name="m"}} 0.5
"""


class FakeEngine:
    """A vLLM-like /metrics endpoint whose waiting queue the benchmark sets."""

    def __init__(self):
        self.waiting = 0
        eng = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's server (uvicorn) does
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = VLLM.format(waiting=eng.waiting).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def reaction(tmp: Path, mode: str) -> list[float]:
    """Signal-to-clock-set latencies (s) over EPISODES fast-path episodes."""
    store_url = f"sqlite:///{tmp / f'react-{mode}.db'}"
    upgrade(store_url)
    hw = SimBackend(n_gpus=8)
    engine = FakeEngine() if mode == "scraped" else None
    cfg = AgentConfig(tick_s=0.02, poll_s=3600, fast_release_s=0.0, fast_tick_s=0.05, flush_s=1.0, min_clock_change_s=0)
    sched_dir = tmp / f"sched-{mode}"
    publish(sched_dir, make_schedule(1, ["n1"], planned=1200))
    a = Agent("n1", hw, DirSource(sched_dir), TelemetrySink(open_store(store_url), "n1", tmp / f"{mode}.spool"),
              SimExecutor(), cfg, SLOConfig(), KEY, EngineMetricsReader(engine.url) if engine else None)
    hit = threading.Event()
    low = threading.Event()

    def on_set(gpu: int, mhz: int) -> None:
        if gpu == 0:
            (hit if mhz == 1980 else low).set()

    a.on_clock_set = on_set
    t = threading.Thread(target=a.run, daemon=True)
    t.start()
    while a.schedule is None:
        time.sleep(0.01)
    out = []
    for _ in range(EPISODES):
        hit.clear()
        low.clear()
        t0 = time.perf_counter()
        if engine:
            engine.waiting = 100
        else:
            a.signal("bench")
        if not hit.wait(5):
            raise RuntimeError("the fast path did not set the top clock within 5 s")
        out.append(time.perf_counter() - t0)
        if engine:
            engine.waiting = 0
        else:
            a.signal("bench", active=False)
        if not low.wait(5):
            raise RuntimeError("the clock did not come back down within 5 s")
    a.stop()
    t.join(5)
    if engine:
        engine.httpd.shutdown()
    return out


def _proc(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return cpu_s, rss


def idle(tmp: Path, with_engine: bool) -> tuple[float, float]:
    """(RSS MB, CPU % of one core) of an agent process over IDLE_S seconds after warm-up."""
    name = "engine" if with_engine else "plain"
    db = f"sqlite:///{tmp / f'idle-{name}.db'}"
    upgrade(db)
    sched_dir = tmp / f"sched-idle-{name}"
    publish(sched_dir, make_schedule(1, ["n1"], planned=1410))
    env = {**os.environ, "DYNAMO_SCHEDULE_KEY": KEY.decode(), "DYNAMO_HOME": str(tmp), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "dynamo_pipeline", "--db", db, "agent", "run", "--node", "n1", "--backend", "sim",
            "--source", "dir", "--dir", str(sched_dir), "--port", "0"]
    engine = FakeEngine() if with_engine else None
    if engine:
        args += ["--metrics-url", engine.url]
    p = subprocess.Popen(args, env=env, cwd=tmp, stderr=subprocess.PIPE, text=True)
    try:
        p.stderr.readline()
        time.sleep(3.0)  # warm-up: imports done, schedule applied, first flush
        c0, _ = _proc(p.pid)
        t0 = time.monotonic()
        time.sleep(IDLE_S)
        c1, rss = _proc(p.pid)
        cpu_pct = 100.0 * (c1 - c0) / (time.monotonic() - t0)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(20)
        if engine:
            engine.httpd.shutdown()
    return rss / 1e6, cpu_pct


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_agent_"))
    for mode in ("pushed", "scraped"):
        lat = reaction(tmp, mode)
        ms = [x * 1e3 for x in lat]
        print(f"fast path ({mode:7s}, {len(ms)} episodes): p50 {statistics.median(ms):.2f} ms, "
              f"p99 {_pct(ms, 0.99):.2f} ms, max {max(ms):.2f} ms (target p99 <= 100 ms)")
    text = VLLM.format(waiting=3)
    med, _ = timed(lambda: parse(text), repeat=2000)
    print(f"parse one vLLM scrape (gauges + TTFT histogram): median {med * 1e6:.0f} us")
    for with_engine in (False, True):
        rss_mb, cpu = idle(tmp, with_engine)
        what = "scraping a vLLM endpoint every 0.05 s" if with_engine else "no engine endpoint"
        print(f"idle agent process ({what}), {IDLE_S:.0f} s: RSS {rss_mb:.1f} MB, CPU {cpu:.2f}% of one core "
              "(target <= 100 MB, <= 2%)")


if __name__ == "__main__":
    main()
