"""The node agent: one control loop that keeps this node's GPUs on the published schedule.

:class:`Agent` owns a hardware backend (behind :class:`GuardedBackend`), a schedule source, a
telemetry sink, an executor worker and, per instance of this node, a :class:`ClockPolicy`. Its
loop (:meth:`Agent.run`) sleeps on an event until the next deadline or until something is pushed
(a fast-path signal, a stop), so it reacts at once yet costs almost nothing while idle:

* every ``poll_s``: read the source; every new document goes through
  :func:`check_schedule`; a rejected one is reported (event + ack ``rejected``) and the last good
  schedule stays; the newest valid one whose first window has begun is applied (one published
  ahead waits for its start): instance changes go to the executor, clocks are set, and the ack
  ``applied`` is flushed to the store right away;
* every ``fast_tick_s``: scrape the engine (when a metrics URL is set) and step each policy
  (fast path, clock by load with hysteresis and the minimum interval);
* past ``stale_after_s`` without a schedule window covering now: top clock, and say so;
* every ``telemetry_window_s``: power and energy per instance; every ``flush_s`` (on a thread):
  telemetry to the store or the local spool.

On SIGTERM/SIGINT (:meth:`Agent.stop`) the loop ends, every GPU it locked is reset to the
driver's default, and telemetry is flushed. :class:`AgentServer` serves ``/metrics`` and
``/healthz`` and the token-guarded control endpoint ``POST /signal``.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dynamo_pipeline.agent.engine_metrics import EngineMetricsReader, EngineSample
from dynamo_pipeline.agent.executor import ExecutorWorker, diff_instances
from dynamo_pipeline.agent.hw import ClockBackend, GuardedBackend, HardwareUnavailable
from dynamo_pipeline.agent.policy import ClockPolicy, Decision, PolicyParams
from dynamo_pipeline.agent.source import Rejected, check_schedule
from dynamo_pipeline.agent.telemetry import TelemetrySink
from dynamo_pipeline.config import AgentConfig, SLOConfig
from dynamo_pipeline.schedules.schema import Instance, Schedule


class AgentMetrics:
    """The agent's own Prometheus metrics (a private registry, so several agents share a process)."""

    def __init__(self, node: str):
        r = self.registry = CollectorRegistry()
        self.version = Gauge("dynamo_agent_schedule_version", "Schedule version applied", ["node"], registry=r).labels(node)
        self.clock = Gauge("dynamo_agent_clock_mhz", "SM clock set per instance (MHz)", ["node", "instance"], registry=r)
        self.fast = Gauge("dynamo_agent_fast_path_active", "1 while a fast-path override holds", ["node", "instance"], registry=r)
        self.stale = Gauge("dynamo_agent_stale_fallback", "1 while on the top clock because the schedule is stale", ["node"], registry=r).labels(node)
        self.overrides = Counter("dynamo_agent_overrides", "Fast-path overrides started", ["node", "reason"], registry=r)
        self.rejected = Counter("dynamo_agent_schedules_rejected", "Schedules rejected", ["node", "kind"], registry=r)
        self.hw_errors = Counter("dynamo_agent_hardware_errors", "Failed hardware calls", ["node"], registry=r).labels(node)
        self.clock_changes = Counter("dynamo_agent_clock_changes", "Clock changes made", ["node"], registry=r).labels(node)
        self.power = Gauge("dynamo_agent_power_w", "Power per instance over the last window (W)", ["node", "instance"], registry=r)
        self.spooled = Gauge("dynamo_agent_telemetry_spooled", "Telemetry records spooled locally, not yet in the store", ["node"], registry=r).labels(node)


@dataclass
class _InstanceState:
    instance: Instance
    policy: ClockPolicy
    energy0_j: float | None = None
    window_start_s: float = 0.0
    dirty: bool = False  # the last clock setting failed on some GPU: retried every control step
    sample: EngineSample | None = None  # what this instance's engine said at the last scrape


@dataclass
class AgentStatus:
    node: str
    version: int | None = None
    stale: bool = False
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    last_error: str | None = None
    rejected: int = 0


class Agent:
    """One node's agent. ``engine``: one metrics reader for the node, or a function giving each
    instance its own (one vLLM server per instance). ``clock`` is the monotonic clock (tests and
    the benchmark may pass their own)."""

    def __init__(self, node: str, backend: ClockBackend, source, sink: TelemetrySink, executor,
                 cfg: AgentConfig, slo: SLOConfig, key: bytes,
                 engine: EngineMetricsReader | Callable[[Instance], EngineMetricsReader] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], datetime] | None = None):
        self.node, self.cfg, self.key = node, cfg, key
        self.source, self.sink, self.engine = source, sink, engine
        self.clock = clock
        self.wall = wall or (lambda: datetime.now(timezone.utc))
        self.metrics = AgentMetrics(node)
        self.status = AgentStatus(node)
        self.hw = GuardedBackend(backend, self._hw_error)
        self.raw_backend = backend
        self.params = PolicyParams(
            min_clock_change_s=cfg.min_clock_change_s, down_hysteresis=cfg.down_hysteresis,
            down_hold_s=cfg.down_hold_s, fast_waiting_max=cfg.fast_waiting_max,
            fast_slo_fraction=cfg.fast_slo_fraction, fast_release_s=cfg.fast_release_s,
            ttft_slo_s=slo.ttft_p99_s, tbt_slo_s=slo.tbt_p99_s)
        self.schedule: Schedule | None = None
        self.instances: dict[str, _InstanceState] = {}
        self.locked: set[int] = set()
        self.last_sample: EngineSample | None = None
        self.stale_since_s: float | None = None
        self.fallback = False
        self.executor = ExecutorWorker(executor, self._executor_done)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._signals: dict[str, tuple[str, ...]] = {}  # instance id ("*" = all) -> pushed reasons
        self._signal_lock = threading.Lock()
        self._flush_wake = threading.Event()
        self._last_hw_report = -math.inf
        self._deferred: list[tuple[str, bytes]] = []  # documents whose clocks could not be checked yet
        self._pending: dict[int, Schedule] = {}  # verified schedules whose first window has not begun
        self.on_clock_set: Callable[[int, int], None] | None = None  # hook for the benchmark

    # -- errors and reports -----------------------------------------------------------------
    def _hw_error(self, what: str, e: BaseException) -> None:
        """Count and report a failure (hardware or an unexpected error in a loop step), at most one
        event per 10 s."""
        self.metrics.hw_errors.inc()
        self.status.last_error = f"{what}: {type(e).__name__}: {e}"
        now = self.clock()
        if now - self._last_hw_report >= 10.0:  # one event per 10 s at most: a dead GPU must not flood the store
            self._last_hw_report = now
            self.sink.event("hardware_error", reason=self.status.last_error[:2000])

    def _executor_done(self, change: dict, error: str | None) -> None:
        self.sink.event("executor", instance_id=change.get("instance_id"),
                        reason=json.dumps(change) + (f" failed: {error}" if error else " ok"))

    def _reject(self, rej) -> None:
        self.status.rejected += 1
        self.metrics.rejected.labels(self.node, rej.kind).inc()
        self.sink.event("rejected", version=rej.version, reason=f"{rej.kind}: {rej.origin}: {rej.reason}"[:4000])
        if rej.version is not None and rej.kind != "invalid":
            self.sink.ack(rej.version, "rejected", f"{rej.kind}: {rej.reason}"[:4000])
        self._flush_wake.set()

    # -- schedules ----------------------------------------------------------------------------
    def poll_schedule(self) -> None:
        docs, self._deferred = self._deferred, []
        try:
            docs += list(self.source.documents())
        except Exception as e:  # noqa: BLE001 - a source that is down keeps the last good schedule
            self.status.last_error = f"schedule source: {type(e).__name__}: {e}"
        for origin, text in docs:
            try:
                s = check_schedule(text, origin, self.node, self.key, self.hw.supported_clocks_mhz)
            except Rejected as r:
                self._reject(r.rejection)
                continue
            except HardwareUnavailable:  # cannot check the clocks now: check this document again next poll
                self._deferred.append((origin, text))
                continue
            if self.schedule is None or s.version > self.schedule.version:
                self._pending[s.version] = s
        # the newest schedule whose first window has begun; later ones wait for their start
        now = self.wall()
        due = [v for v, s in self._pending.items() if min(w.start for w in s.valid) <= now]
        if due:
            best = self._pending[max(due)]
            for v in [v for v in self._pending if v <= best.version]:
                del self._pending[v]
            self.apply(best)

    def _top_clock(self, inst: Instance) -> int:
        try:
            tops = [c[0] for g in inst.gpu_ids if (c := self.hw.supported_clocks_mhz(g))]
        except HardwareUnavailable:
            tops = []
        return min(tops) if tops else max(inst.fallback_clock_mhz, *(b.clock_mhz for b in inst.clock_table))

    def apply(self, sched: Schedule) -> None:
        """Make ``sched`` the current schedule: executor changes, clocks, ack."""
        now = self.clock()
        old = [s.instance for s in self.instances.values()]
        new = sched.instances_on(self.node)
        for change in diff_instances(old, new):
            self.executor.submit(change)
        keep = {i.instance_id for i in new}
        for iid in list(self.instances):
            if iid not in keep:
                del self.instances[iid]
                for g in (self.metrics.clock, self.metrics.fast, self.metrics.power):
                    try:
                        g.remove(self.node, iid)
                    except KeyError:
                        pass
        failed = 0
        for inst in new:
            prev = self.instances.get(inst.instance_id)
            pol = ClockPolicy(inst, self._top_clock(inst), self.params)
            sample = prev.sample if prev is not None else None
            load = sample.load_rps if sample is not None else math.nan
            if prev is not None and prev.instance.gpu_ids == inst.gpu_ids:
                pol.current_mhz, pol.last_change_s = prev.policy.current_mhz, prev.policy.last_change_s
                pol.override, pol.clear_since_s = prev.policy.override, prev.policy.clear_since_s
            st = _InstanceState(inst, pol, window_start_s=now, sample=sample)
            self.instances[inst.instance_id] = st
            target = pol.top_clock_mhz if pol.override is not None else pol.initial_clock(load)
            pol.current_mhz, pol.last_change_s = target, now
            failed += not self._set_clocks(st, target, sched.version, reason="schedule")
        used = {g for i in new for g in i.gpu_ids}
        for g in sorted(self.locked - used):
            if self.hw.reset(g):
                self.locked.discard(g)
        self.schedule = sched
        self.fallback = False
        self.stale_since_s = None
        self.status.version = sched.version
        self.metrics.version.set(sched.version)
        self.metrics.stale.set(0)
        self.status.stale = False
        if failed:  # the schedule stands (retried every step), but the planner must know
            self.sink.ack(sched.version, "error", f"{failed} of {len(new)} instances: clocks not set ({self.status.last_error})"[:4000])
        else:
            self.sink.ack(sched.version, "applied", f"{len(new)} instances")
        self._flush_wake.set()

    def _set_clocks(self, st: _InstanceState, mhz: int, version: int | None, reason: str) -> bool:
        ok = True
        for g in st.instance.gpu_ids:
            if self.hw.set_clock(g, mhz):
                self.locked.add(g)
                if self.on_clock_set:
                    self.on_clock_set(g, mhz)
            else:
                ok = False
        st.dirty = not ok
        self.metrics.clock.labels(self.node, st.instance.instance_id).set(mhz)
        self.metrics.clock_changes.inc()
        self.sink.event("applied", version=version, instance_id=st.instance.instance_id, clock_mhz=mhz,
                        reason=reason if ok else f"{reason} (hardware error: {self.status.last_error})")
        return ok

    # -- control ------------------------------------------------------------------------------
    def signal(self, reason: str, instance_id: str = "*", active: bool = True) -> None:
        """Push a fast-path signal (e.g. from the gateway: a request ran past its predicted length)."""
        with self._signal_lock:
            if active:
                self._signals[instance_id] = (*self._signals.get(instance_id, ()), reason)
            else:
                self._signals.pop(instance_id, None)
        self._wake.set()

    def _forced(self, iid: str) -> tuple[str, ...]:
        with self._signal_lock:
            return self._signals.get("*", ()) + self._signals.get(iid, ())

    def _act(self, st: _InstanceState, d: Decision) -> None:
        v = self.schedule.version if self.schedule else None
        if d.started is not None:
            for r in d.started.reasons:
                self.metrics.overrides.labels(self.node, r.split(":")[0]).inc()
            self.metrics.fast.labels(self.node, st.instance.instance_id).set(1)
        if d.clock_mhz is not None:
            why = "retry" if st.dirty else "fast_path" if st.policy.override else "load"
            self._set_clocks(st, d.clock_mhz, v, why)
        if d.ended is not None:
            self.metrics.fast.labels(self.node, st.instance.instance_id).set(0)
            self.sink.event("override", version=v, instance_id=st.instance.instance_id,
                            clock_mhz=st.policy.top_clock_mhz, reason=",".join(d.ended.reasons),
                            duration_s=d.ended.duration_s)

    def control_step(self, scrape: bool) -> None:
        """Step every policy (after a fresh engine scrape when ``scrape``)."""
        if scrape and self.engine is not None:
            samples: dict[int, EngineSample | None] = {}
            for st in self.instances.values():
                reader = self.engine(st.instance) if callable(self.engine) else self.engine
                if id(reader) not in samples:  # one scrape per endpoint, however many instances share it
                    try:
                        samples[id(reader)] = reader.read()
                    except Exception as e:  # noqa: BLE001 - an engine that is down: keep the clock, say so
                        self.status.last_error = f"engine metrics {getattr(reader, 'url', '')}: {type(e).__name__}: {e}"
                        samples[id(reader)] = None
                st.sample = samples[id(reader)]
                self.last_sample = st.sample
        now = self.clock()
        if self._check_stale(now):
            return
        was_dirty = any(st.dirty for st in self.instances.values())
        for st in self.instances.values():
            d = st.policy.step(now, st.sample, self._forced(st.instance.instance_id))
            if d.clock_mhz is None and st.dirty and st.policy.current_mhz is not None:
                d.clock_mhz = st.policy.current_mhz  # a GPU that refused the clock earlier: try again
            self._act(st, d)
        if was_dirty and self.schedule is not None and not any(st.dirty for st in self.instances.values()):
            self.sink.ack(self.schedule.version, "applied", f"{len(self.instances)} instances (after retrying the clocks)")
            self._flush_wake.set()

    def _check_stale(self, now: float) -> bool:
        if self.schedule is None:
            return False
        if self.schedule.valid_at(self.wall()):
            if self.fallback:
                self.fallback = False
                self.metrics.stale.set(0)
                self.status.stale = False
            self.stale_since_s = None
            return False
        if self.stale_since_s is None:
            self.stale_since_s = now
        if now - self.stale_since_s < self.cfg.stale_after_s:
            return False
        if not self.fallback:
            self.fallback = True
            self.status.stale = True
            self.metrics.stale.set(1)
            self.sink.event("fallback", version=self.schedule.version,
                            reason=f"no schedule window covers now for {now - self.stale_since_s:.0f} s "
                                   f"(bound {self.cfg.stale_after_s:.0f} s): top clock until a new schedule arrives")
            for st in self.instances.values():
                d = st.policy.force_top(now)
                if d.clock_mhz is not None:
                    self._set_clocks(st, d.clock_mhz, self.schedule.version, "stale_fallback")
        return True

    def telemetry_window(self) -> None:
        now = self.clock()
        advance = getattr(self.raw_backend, "advance", None)  # the sim backend's clock follows wall time
        if advance is not None and hasattr(self, "_last_advance"):
            try:
                advance(max(0.0, now - self._last_advance))
            except Exception as e:  # noqa: BLE001
                self._hw_error("advance", e)
        self._last_advance = now
        for st in self.instances.values():
            e = [self.hw.energy_j(g) for g in st.instance.gpu_ids]
            p = [self.hw.power_w(g) for g in st.instance.gpu_ids]
            energy = sum(e) if all(x is not None for x in e) else None
            power = sum(p) if all(x is not None for x in p) else None
            window = now - st.window_start_s
            if st.energy0_j is not None and energy is not None and window > 0:
                self.sink.event("window", version=self.schedule.version if self.schedule else None,
                                instance_id=st.instance.instance_id, clock_mhz=st.policy.current_mhz,
                                window_s=window, power_w=(energy - st.energy0_j) / window, energy_j=energy - st.energy0_j)
            if power is not None:
                self.metrics.power.labels(self.node, st.instance.instance_id).set(power)
            st.energy0_j, st.window_start_s = energy, now

    # -- loop ---------------------------------------------------------------------------------
    def _flusher(self) -> None:
        while not self._stop.is_set():
            self._flush_wake.wait(self.cfg.flush_s)
            self._flush_wake.clear()
            self.sink.flush()
            self.metrics.spooled.set(self.sink.spooled_pending())

    def run(self) -> None:
        """Run until :meth:`stop`; then reset clocks and flush."""
        flusher = threading.Thread(target=self._flusher, name="agent-flush", daemon=True)
        flusher.start()
        now = self.clock()
        next_poll = next_fast = now
        next_tick = now
        next_window = now
        while not self._stop.is_set():
            now = self.clock()
            if now >= next_poll:
                self._guarded("schedule poll", self.poll_schedule)
                next_poll = now + self.cfg.poll_s
            scrape = False
            if now >= next_fast:
                scrape = self.engine is not None
                next_fast = now + self.cfg.fast_tick_s
            if now >= next_tick or scrape or self._wake.is_set():
                self._wake.clear()
                self._guarded("control step", self.control_step, scrape)
                next_tick = now + self.cfg.tick_s
            if now >= next_window:
                self._guarded("telemetry window", self.telemetry_window)
                next_window = now + self.cfg.telemetry_window_s
            nxt = min(next_poll, next_tick, next_window, next_fast if self.engine is not None else math.inf)
            self._wake.wait(max(0.0, nxt - self.clock()))
        self.shutdown()
        self._flush_wake.set()
        flusher.join(timeout=5)

    def _guarded(self, what: str, fn, *args) -> None:
        """Run one step of the loop; an unexpected error is reported and the loop goes on."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - the daemon outlives a bad step; the next one retries
            self._hw_error(what, e)

    def stop(self, *_args) -> None:
        self._stop.set()
        self._wake.set()
        self._flush_wake.set()

    def shutdown(self) -> None:
        """Reset every GPU this agent locked and write what is left of the telemetry."""
        for g in sorted(self.locked):
            if self.hw.reset(g):
                self.locked.discard(g)
        self.sink.event("applied", version=self.schedule.version if self.schedule else None,
                        reason=f"shutdown: clocks reset to default on GPUs; {len(self.locked)} could not be reset")
        self.executor.close()
        self.sink.flush()


class AgentServer:
    """``/metrics`` and ``/healthz`` (GET, open) and ``POST /signal`` (bearer token from the env)."""

    def __init__(self, agent: Agent, host: str, port: int, token: str | None):
        self.agent, self.token = agent, token
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet: the agent logs through telemetry
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/metrics":
                    self._send(200, generate_latest(agent.metrics.registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    st = agent.status
                    body = {"node": st.node, "version": st.version, "stale_fallback": agent.fallback,
                            "rejected": st.rejected, "last_error": st.last_error,
                            "hardware_errors": agent.hw.errors, "telemetry_spooled": agent.sink.spooled_pending()}
                    self._send(200, json.dumps(body).encode())
                else:
                    self._send(404, b'{"error": "GET /metrics or /healthz"}')

            def do_POST(self):
                if self.path != "/signal":
                    return self._send(404, b'{"error": "POST /signal"}')
                if not srv.token:
                    return self._send(403, b'{"error": "control endpoints are off: set the agent token env var"}')
                given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if not hmac.compare_digest(given.encode(), srv.token.encode()):
                    return self._send(401, b'{"error": "missing or wrong bearer token"}')
                try:
                    n = int(self.headers.get("Content-Length", "0"))
                    req = json.loads(self.rfile.read(n) or b"{}")
                    agent.signal(str(req.get("reason", "pushed")), str(req.get("instance_id", "*")), bool(req.get("active", True)))
                except (ValueError, TypeError) as e:
                    return self._send(400, json.dumps({"error": f"bad JSON body: {e}"}).encode())
                self._send(202, b'{"ok": true}')

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._t = threading.Thread(target=self.httpd.serve_forever, name="agent-http", daemon=True)

    def start(self) -> "AgentServer":
        self._t.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def token_from_env(var: str) -> str | None:
    """The control token from ``var``; ``None`` (control endpoints refuse) when unset."""
    return os.environ.get(var) or None
