"""Schedules for the agent tests: a fleet of nodes, one TP4 and one TP2 instance per node (or fewer)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from dynamo_pipeline.schedules.schema import ClockBand, Instance, Pool, Schedule, Window, sign

KEY = b"agent-tests-key-0123456789abcdef"


def make_schedule(version: int, nodes: list[str], clocks=(1200, 1410, 1800), fallback: int = 1980,
                  valid_from: datetime | None = None, valid_s: float = 3600.0, planned: int | None = None) -> Schedule:
    start = valid_from or datetime.now(timezone.utc) - timedelta(seconds=60)
    insts = []
    for n in nodes:
        insts.append(Instance(
            instance_id=f"{n}-a", node=n, gpu_ids=(0, 1, 2, 3), tp=4, clock_mhz=planned or clocks[0],
            clock_table=tuple(ClockBand(max_load_rps=2.0 * (k + 1), clock_mhz=c) for k, c in enumerate(clocks)),
            max_load_rps=2.0 * len(clocks), fallback_clock_mhz=fallback))
    pool = Pool(pool_id="p-MM", classes=("MM",), servers=tuple(nodes), instances=tuple(insts))
    routing = {"MM": {"p-MM": {i.instance_id: 1.0 / len(insts) for i in insts}}} if insts else {}
    return Schedule(version=version, created_at=datetime.now(timezone.utc), model="Llama-2-70B", gpu="H100-SXM",
                    valid=(Window(start=start, end=start + timedelta(seconds=valid_s)),), pools=(pool,), routing=routing)


def publish(directory: Path, schedule: Schedule, key: bytes = KEY, name: str | None = None) -> Path:
    """Write the signed schedule atomically (temp file + rename), as a publisher would."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"schedule-{schedule.version:06d}.json")
    tmp = directory / f".{path.name}.tmp"
    tmp.write_text(sign(schedule, key).to_json())
    os.replace(tmp, path)
    return path
