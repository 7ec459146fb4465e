"""Helpers shared by benchmarks: repeated timing with medians, and a PostgreSQL URL when reachable."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], repeat: int = 3, setup: Callable[[], object] | None = None) -> tuple[float, list[float]]:
    """Median and all wall times (s) of ``fn`` over ``repeat`` runs, ``setup`` untimed before each."""
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def pg_url() -> str | None:
    url = os.environ.get("DYNAMO_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        psycopg.connect(url.replace("+psycopg", ""), connect_timeout=2).close()
        return url
    except Exception:
        return None
