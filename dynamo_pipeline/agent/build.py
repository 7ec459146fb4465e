"""Wire an :class:`Agent` from settings: backend, source, telemetry sink, executor, engine reader."""

from __future__ import annotations

from pathlib import Path

from dynamo_pipeline.agent.daemon import Agent
from dynamo_pipeline.agent.engine_metrics import EngineMetricsReader
from dynamo_pipeline.agent.executor import EXECUTORS
from dynamo_pipeline.agent.source import SOURCES
from dynamo_pipeline.agent.telemetry import TelemetrySink
from dynamo_pipeline.config import Settings
from dynamo_pipeline.schedules.schema import Instance, schedule_key
from dynamo_pipeline.store.db import open_store


def engine_readers(url: str, window_s: float = 5.0):
    """A reader for a node-wide endpoint, or — when ``url`` has ``{instance_id}`` or ``{first_gpu}``
    placeholders, e.g. ``http://127.0.0.1:80{first_gpu:02d}/metrics`` — a function giving each
    instance the reader of its own engine (kept across schedules, so its counters carry on)."""
    if "{" not in url:
        return EngineMetricsReader(url, window_s=window_s)
    readers: dict[str, EngineMetricsReader] = {}

    def reader_for(inst: Instance) -> EngineMetricsReader:
        u = url.format(instance_id=inst.instance_id, first_gpu=inst.gpu_ids[0])
        if u not in readers:
            readers[u] = EngineMetricsReader(u, window_s=window_s)
        return readers[u]

    return reader_for


def build_agent(settings: Settings, node: str, backend, executor_log: str | None = None) -> Agent:
    """An agent for ``node`` on ``backend`` (a ``GPUBackend``) as ``settings.agent`` says.
    Raises ``ScheduleKeyError`` when ``DYNAMO_SCHEDULE_KEY`` is unset, ``ValueError`` on a bad
    source or executor setting."""
    cfg = settings.agent
    key = schedule_key()
    if cfg.source == "dir":
        source = SOURCES["dir"](cfg.schedule_dir)
    elif cfg.source == "http":
        if not cfg.schedule_url:
            raise ValueError("agent.source=http needs agent.schedule_url (or --url)")
        source = SOURCES["http"](cfg.schedule_url)
    else:
        source = SOURCES["store"](settings.database_url)
    spool = cfg.spool_path or str(Path(settings.home) / f"agent-{node}.spool.jsonl")
    sink = TelemetrySink(open_store(settings.database_url), node, spool)
    if cfg.executor == "command":
        executor = EXECUTORS["command"](cfg.executor_command)
    elif cfg.executor == "http":
        executor = EXECUTORS["http"](cfg.executor_url)
    else:
        executor = EXECUTORS["sim"](executor_log)
    engine = engine_readers(cfg.metrics_url, window_s=cfg.tick_s) if cfg.metrics_url else None
    return Agent(node, backend, source, sink, executor, cfg, settings.slo, key, engine)
