"""Observed load and latency from the serving engine's own Prometheus endpoint (vLLM's names).

The agent reads the gauges ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` and the
histograms ``vllm:time_to_first_token_seconds`` and ``vllm:time_per_output_token_seconds``. Against
a scrape from about ``window_s`` earlier it takes the *difference* of each histogram's cumulative
buckets, so the P99 it reports is the P99 of the requests of that window (not since the engine
started), and the increase of the TTFT histogram's ``_count`` over the window gives the arrival
rate (every admitted request gets exactly one first token).
A gauge ``dynamo:requests_past_predicted_length`` (the gateway or a sidecar may export it; absent
means 0) carries the third fast-path signal. Labels (``model_name`` …) are summed over.

:class:`EngineSample` is plain data; :class:`EngineMetricsReader` keeps the previous scrape.
"""

from __future__ import annotations

import http.client
import math
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
TTFT = "vllm:time_to_first_token_seconds"
TBT = "vllm:time_per_output_token_seconds"
PAST_PREDICTED = "dynamo:requests_past_predicted_length"


@dataclass(frozen=True)
class Scrape:
    """One scrape: gauges, and per histogram its cumulative (upper bound s, count) buckets."""

    at_s: float
    gauges: dict[str, float]
    histograms: dict[str, list[tuple[float, float]]]


@dataclass(frozen=True)
class EngineSample:
    """What the engine says over the last interval. Latencies are ``nan`` when no request finished
    that stage in the interval; ``load_rps`` is ``nan`` on the first scrape."""

    running: float
    waiting: float
    load_rps: float
    ttft_p99_s: float
    tbt_p99_s: float
    past_predicted: float


def parse(text: str, at_s: float | None = None) -> Scrape:
    """Parse Prometheus text exposition into a :class:`Scrape` (labels summed)."""
    gauges: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name in (RUNNING, WAITING, PAST_PREDICTED):
            gauges[fam.name] = gauges.get(fam.name, 0.0) + sum(s.value for s in fam.samples)
        elif fam.name in (TTFT, TBT):
            b = buckets.setdefault(fam.name, {})
            for s in fam.samples:
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    b[le] = b.get(le, 0.0) + s.value
    hist = {name: sorted(b.items()) for name, b in buckets.items()}
    return Scrape(time.monotonic() if at_s is None else at_s, gauges, hist)


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The ``q`` quantile from cumulative buckets, interpolated linearly inside the bucket as
    Prometheus' ``histogram_quantile`` does; the last finite bound when it falls in ``+Inf``."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def _delta(new: list[tuple[float, float]], old: list[tuple[float, float]] | None) -> list[tuple[float, float]]:
    if not old:
        return new
    prev = dict(old)
    d = [(le, c - prev.get(le, 0.0)) for le, c in new]
    if any(c < 0 for _, c in d):  # the engine restarted: counters began again
        return new
    return d


def sample(new: Scrape, old: Scrape | None, q: float = 0.99) -> EngineSample:
    """The interval between two scrapes as an :class:`EngineSample`."""
    ttft = _delta(new.histograms.get(TTFT, []), old.histograms.get(TTFT) if old else None)
    tbt = _delta(new.histograms.get(TBT, []), old.histograms.get(TBT) if old else None)
    load = math.nan
    if old is not None and new.at_s > old.at_s and ttft:
        load = ttft[-1][1] / (new.at_s - old.at_s)
    return EngineSample(
        running=new.gauges.get(RUNNING, 0.0),
        waiting=new.gauges.get(WAITING, 0.0),
        load_rps=load,
        ttft_p99_s=quantile(ttft, q),
        tbt_p99_s=quantile(tbt, q),
        past_predicted=new.gauges.get(PAST_PREDICTED, 0.0),
    )


class EngineMetricsReader:
    """Scrapes ``url`` (one kept-alive HTTP connection). Each read returns the gauges as they are
    now and the arrival rate and latency P99s over the last ``window_s`` (a sliding window of past
    scrapes), so frequent scrapes for the fast path do not make the load estimate noisy."""

    def __init__(self, url: str, timeout_s: float = 1.0, window_s: float = 5.0):
        self.url = url
        self.timeout_s = timeout_s
        self.window_s = window_s
        self._past: deque[Scrape] = deque()
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"engine metrics URL {url!r} must be http(s)://HOST[:PORT]/PATH")
        self._cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        self._host, self._port = u.hostname, u.port
        self._path = (u.path or "/metrics") + (f"?{u.query}" if u.query else "")
        self._conn: http.client.HTTPConnection | None = None

    def _get(self) -> str:
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = self._cls(self._host, self._port, timeout=self.timeout_s)
            try:
                self._conn.request("GET", self._path)
                r = self._conn.getresponse()
                body = r.read()
                if r.status != 200:
                    raise OSError(f"{self.url} answered HTTP {r.status}")
                return body.decode()
            except (http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def read(self) -> EngineSample:
        """One scrape; raises ``OSError`` when the engine does not answer."""
        new = parse(self._get())
        # base: the newest past scrape at least window_s old (or the oldest there is)
        while len(self._past) > 1 and new.at_s - self._past[1].at_s >= self.window_s:
            self._past.popleft()
        s = sample(new, self._past[0] if self._past else None)
        self._past.append(new)
        return s
