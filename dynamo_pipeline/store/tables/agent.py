"""Tables owned by the node agent: which schedule version each node applied (the ack the planner
and the 5-minute DAG check) and the agent's telemetry events.

Every row carries an idempotency key chosen by the agent (``event_id``; ``(node, version)`` for
acks), so a batch that is written twice — after a timeout whose commit did land, or when the local
spool is flushed — never duplicates a row. Times are microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dynamo_pipeline.store.tables.base import Base


class AgentAck(Base):
    """Node ``node`` applied (``status='applied'``), rejected (``'rejected'``) or could not set the
    clocks of (``'error'``, the agent keeps retrying) schedule ``version``."""

    __tablename__ = "agent_acks"

    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # applied | rejected | error
    at_us: Mapped[int] = mapped_column(BigInteger, index=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class AgentEvent(Base):
    """One telemetry event. ``kind``: ``applied`` (clock set on an instance), ``override`` (a
    fast-path episode, with ``reason`` and ``duration_s``), ``window`` (power and energy of an
    instance over ``window_s``), ``rejected`` (a schedule refused, with ``reason``), ``fallback``
    (top clock because the schedule went stale), ``executor`` (an instance change handed on),
    ``hardware_error``."""

    __tablename__ = "agent_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    at_us: Mapped[int] = mapped_column(BigInteger, index=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    instance_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    clock_mhz: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    window_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    energy_j: Mapped[float | None] = mapped_column(Float, nullable=True)
