"""Telemetry from an agent to the store, batched, and never lost when the store is away.

Events (``agent_events``) and acks (``agent_acks``) are queued in memory with ids chosen here
(a random 128-bit id per event; ``(node, version)`` per ack). :meth:`TelemetrySink.flush` writes the
local spool (if any) and the queue with *insert … on conflict do nothing* (acks: *do update*, so the
latest status of a version stands), then
empties the spool. When the store cannot be reached the queue is appended to the spool — a local
JSONL file, one record a line, fsynced — and retried at the next flush. Because every row carries
its idempotency key, a batch written twice (a commit that landed before its acknowledgement was
lost, a crash between commit and spool truncation) leaves exactly one row: nothing is lost, nothing
is duplicated.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from dynamo_pipeline.store.db import Store
from dynamo_pipeline.store.tables.agent import AgentAck, AgentEvent

_EVENT_COLS = {c.name for c in AgentEvent.__table__.columns}


def now_us() -> int:
    return int(time.time() * 1_000_000)


def _insert(store: Store, table, rows: list[dict], update: tuple[str, ...] = ()) -> None:
    """Insert ``rows``; on a key already present do nothing, or overwrite the ``update`` columns."""
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=[c.name for c in table.primary_key.columns],
                                          set_={c: stmt.excluded[c] for c in update})
    else:
        stmt = stmt.on_conflict_do_nothing()
    with store.engine.begin() as c:
        c.execute(stmt, rows)


class TelemetrySink:
    """Queue, batch, spool. Thread-safe: the control loop records, a flusher thread writes."""

    def __init__(self, store: Store | None, node: str, spool_path: str | os.PathLike):
        self.store = store
        self.node = node
        self.spool = Path(spool_path)
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        self._q: list[dict] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.written = 0
        self.spooled = 0
        self._spool_lines = sum(1 for _ in self.spool.open()) if self.spool.exists() else 0
        self.last_error: str | None = None

    # -- recording ------------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> str:
        row = {"table": "event", "event_id": uuid.uuid4().hex, "node": self.node, "kind": kind,
               "at_us": now_us(), **fields}
        unknown = set(row) - _EVENT_COLS - {"table"}
        if unknown:
            raise ValueError(f"unknown telemetry fields {sorted(unknown)}")
        with self._lock:
            self._q.append(row)
        return row["event_id"]

    def ack(self, version: int, status: str, detail: str | None = None) -> None:
        with self._lock:
            self._q.append({"table": "ack", "node": self.node, "version": version, "status": status,
                            "at_us": now_us(), "detail": detail})

    def pending(self) -> int:
        with self._lock:
            return len(self._q)

    # -- writing --------------------------------------------------------------------------
    def _read_spool(self) -> list[dict]:
        if not self.spool.exists():
            return []
        rows = []
        with self.spool.open() as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # a torn last line after a crash: the rest of the file stands
        return rows

    def _append_spool(self, rows: list[dict]) -> None:
        with self.spool.open("a") as f:
            for r in rows:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.spooled += len(rows)
        self._spool_lines += len(rows)

    def spooled_pending(self) -> int:
        """Records in the local spool, waiting for the store."""
        return self._spool_lines

    def flush(self) -> bool:
        """Write spool + queue to the store; on failure spool the queue. True when the store took it."""
        with self._flush_lock:
            with self._lock:
                batch, self._q = self._q, []
            if self.store is None:
                if batch:
                    self._append_spool(batch)
                return False
            spooled = self._read_spool()
            rows = spooled + batch
            if not rows:
                return True
            try:
                events = [{k: v for k, v in r.items() if k != "table"} for r in rows if r["table"] == "event"]
                # an ack's latest word stands (error -> applied after a retry): one row per key, the last
                acks = list({(r["node"], r["version"]): {k: v for k, v in r.items() if k != "table"}
                             for r in rows if r["table"] == "ack"}.values())
                for r in events:
                    for c in _EVENT_COLS:
                        r.setdefault(c, None)
                if events:
                    _insert(self.store, AgentEvent.__table__, events)
                if acks:
                    _insert(self.store, AgentAck.__table__, acks, update=("status", "at_us", "detail"))
            except (SQLAlchemyError, OSError) as e:
                self.last_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                if batch:
                    self._append_spool(batch)
                return False
            if spooled:
                self.spool.unlink(missing_ok=True)
                self._spool_lines = 0
            self.written += len(rows)
            self.last_error = None
            return True
