"""Which schedule version each node applied: the check the planner and the 5-minute DAG make.

:func:`agents_acknowledged` polls ``agent_acks`` until every named node has applied the version
(or a later one is not required: exactly ``version``), or the timeout passes; it returns plain data
saying who applied, who rejected (and why) and who has not answered.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select

from dynamo_pipeline.store.db import Store
from dynamo_pipeline.store.tables.agent import AgentAck


@dataclass(frozen=True)
class AckResult:
    """``ok`` when every node applied ``version``; ``rejected`` maps node → reason for every node
    that refused it (``rejected``) or could not set its clocks (``error``)."""

    version: int
    applied: frozenset[str]
    rejected: dict[str, str] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()
    waited_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.rejected

    def __bool__(self) -> bool:
        return self.ok


def acks_frame(store: Store, version: int) -> list[dict]:
    """Every ack of ``version`` as plain dicts (node, status, at_us, detail)."""
    with store.engine.connect() as c:
        rows = c.execute(select(AgentAck.node, AgentAck.status, AgentAck.at_us, AgentAck.detail)
                         .where(AgentAck.version == version).order_by(AgentAck.node)).all()
    return [dict(r._mapping) for r in rows]


def agents_acknowledged(store: Store, version: int, nodes: Iterable[str], timeout_s: float = 60.0,
                        poll_s: float = 0.2) -> AckResult:
    """Wait up to ``timeout_s`` for every node in ``nodes`` to ack ``version``; a rejection ends
    the wait for that node. Returns :class:`AckResult` (truthy when all applied)."""
    want = frozenset(nodes)
    t0 = time.monotonic()
    while True:
        rows = acks_frame(store, version)
        applied = frozenset(r["node"] for r in rows if r["status"] == "applied") & want
        rejected = {r["node"]: r["detail"] or "" for r in rows if r["status"] != "applied" and r["node"] in want}
        missing = want - applied - rejected.keys()
        waited = time.monotonic() - t0
        if not missing or waited >= timeout_s:
            return AckResult(version, applied, rejected, frozenset(missing), waited)
        time.sleep(min(poll_s, max(0.0, timeout_s - waited)))
