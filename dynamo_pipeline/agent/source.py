"""Where an agent gets schedules: a directory of signed JSON files, an HTTP URL, or the store.

A source returns signed documents as text; :func:`check_schedule` is the one gate every document
passes before anything is applied (schema, signature, this node, supported clocks). Sources are
kept small and keyed by name in :data:`SOURCES` so the planner's own reader can replace one.

* ``dir``: every ``*.json`` in a directory; the newest *valid* version wins, so a tampered or
  half-written newer file never hides the last good one. Files are re-read only when their size or
  mtime changes.
* ``http``: one URL that serves the current signed schedule (``ETag`` respected).
* ``store``: the planner's published-schedules table (``schedules``), newest version first, then
  every version published after it.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dynamo_pipeline.schedules.schema import Schedule, ScheduleError, SignedSchedule, verify


@dataclass(frozen=True)
class Rejection:
    """A document the agent refused: where it came from, which version (if readable), why."""

    origin: str
    version: int | None
    kind: str  # invalid | signature | other_node | unsupported_clock | unknown_gpu
    reason: str


class Rejected(Exception):
    def __init__(self, rej: Rejection):
        super().__init__(rej.reason)
        self.rejection = rej


def check_schedule(text: str | bytes, origin: str, node: str, key: bytes,
                   clocks_of: Callable[[int], list[int] | None]) -> Schedule:
    """The verified schedule, or :class:`Rejected` saying why not. ``clocks_of(gpu)`` gives the
    supported clocks of a GPU of this node (``None`` when there is no such GPU)."""
    try:
        signed = SignedSchedule.from_json(text)
    except ScheduleError as e:
        raise Rejected(Rejection(origin, None, "invalid", str(e))) from None
    version = signed.schedule.version
    try:
        sched = verify(signed, key)
    except ScheduleError as e:
        raise Rejected(Rejection(origin, version, "signature", str(e))) from None
    servers = {s for p in sched.pools for s in p.servers} | {i.node for p in sched.pools for i in p.instances}
    if node not in servers:
        raise Rejected(Rejection(origin, version, "other_node",
                                 f"schedule version {version} does not name node {node!r} (it covers "
                                 f"{sorted(servers)[:8]}); check --node or the planner's server list"))
    for inst in sched.instances_on(node):
        wanted = {inst.clock_mhz, inst.fallback_clock_mhz, *(b.clock_mhz for b in inst.clock_table)}
        for g in inst.gpu_ids:
            supported = clocks_of(g)
            if supported is None:
                raise Rejected(Rejection(origin, version, "unknown_gpu",
                                         f"instance {inst.instance_id} asks for GPU {g}, which node {node} does not have"))
            bad = sorted(wanted - set(supported))
            if bad:
                raise Rejected(Rejection(origin, version, "unsupported_clock",
                                         f"instance {inst.instance_id}: GPU {g} does not support {bad} MHz "
                                         f"(supported {min(supported)}..{max(supported)} MHz); re-plan with this GPU's clock list"))
    return sched


class DirSource:
    """Signed schedule files in ``path`` (``*.json``); publish by writing a temp file and renaming."""

    name = "dir"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._seen: dict[str, tuple[float, int]] = {}

    def documents(self) -> Iterable[tuple[str, bytes]]:
        """(origin, text) of files that are new or changed since the last call."""
        try:
            files = sorted(self.path.glob("*.json"))
        except OSError:
            return []
        out = []
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            sig = (st.st_mtime, st.st_size)
            if self._seen.get(f.name) == sig:
                continue
            try:
                out.append((str(f), f.read_bytes()))
                self._seen[f.name] = sig
            except OSError:
                continue
        return out


class HttpSource:
    """The current signed schedule served at ``url``."""

    name = "http"

    def __init__(self, url: str, timeout_s: float = 2.0):
        self.url = url
        self.timeout_s = timeout_s
        self._etag: str | None = None

    def documents(self) -> Iterable[tuple[str, bytes]]:
        req = urllib.request.Request(self.url)
        if self._etag:
            req.add_header("If-None-Match", self._etag)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:  # noqa: S310 (operator-set URL)
                body = r.read()
                self._etag = r.headers.get("ETag")
        except urllib.error.HTTPError as e:
            if e.code == 304:
                return []
            raise
        return [(self.url, body)]


class StoreSource:
    """Published schedules in the store's ``schedules`` table (written by the planner's
    ``dynamo_pipeline.schedules.store.publish_to_store``). The first read takes the newest version;
    later reads take every version above the newest seen, so each document is checked once."""

    name = "store"

    def __init__(self, db_url: str):
        from dynamo_pipeline.store.db import open_store

        self.store = open_store(db_url)
        self._last_version = 0

    def documents(self) -> Iterable[tuple[str, bytes]]:
        from sqlalchemy import select

        from dynamo_pipeline.store.tables.planning import ScheduleRow

        q = select(ScheduleRow.version, ScheduleRow.document)
        if self._last_version:
            q = q.where(ScheduleRow.version > self._last_version).order_by(ScheduleRow.version)
        else:
            q = q.order_by(ScheduleRow.version.desc()).limit(1)
        with self.store.engine.connect() as c:
            rows = c.execute(q).all()
        if rows:
            self._last_version = max(v for v, _ in rows)
        return [(f"store:schedules/v{v}", doc.encode()) for v, doc in rows]


SOURCES: dict[str, Callable[..., object]] = {"dir": DirSource, "http": HttpSource, "store": StoreSource}
