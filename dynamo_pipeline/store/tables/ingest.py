"""Tables owned by ingestion: the request log, the quarantine, ingest runs and window loads.

Times of requests are integers (``*_us``: microseconds since the Unix epoch, UTC; ``*_s``: seconds)
so that window arithmetic is the same plain integer SQL on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dynamo_pipeline.store.tables.base import Base


class IngestRun(Base):
    """One `dynamo ingest` of one file. rows_read = rows_stored + rows_quarantined, where
    rows_stored = rows_inserted (new) + rows_already_present (ingested before: idempotency)."""

    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str] = mapped_column(String(64), index=True)
    reader: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # running | complete | failed
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rows_read: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_inserted: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_already_present: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_quarantined: Mapped[int] = mapped_column(BigInteger, default=0)
    first_arrival_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_arrival_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Request(Base):
    """One request of the log (DESIGN §3). The primary key (arrived_at_us, request_id) also serves
    range scans by time."""

    __tablename__ = "requests"

    # A request is identified by (arrival time, id): the key is time-ordered, so loading a log (which
    # comes in time order) appends to the index instead of inserting at random places in it.
    arrived_at_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True)
    prompt_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    ingest_run_id: Mapped[int] = mapped_column(Integer)


class QuarantinedRow(Base):
    """A row that failed validation, kept with where it came from and why."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ingest_run_id: Mapped[int] = mapped_column(Integer, index=True)
    source: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str] = mapped_column(String(64))
    line: Mapped[int] = mapped_column(BigInteger)
    raw: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("file_sha256", "line"),)


class WindowLoad(Base):
    """Arrivals per (model, class, window): derived from `requests`, never hand-entered."""

    __tablename__ = "window_loads"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    class_name: Mapped[str] = mapped_column(String(8), primary_key=True)
    window_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_start_s: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    arrivals: Mapped[int] = mapped_column(BigInteger)
    rate_rps: Mapped[float] = mapped_column(Float)
    input_tokens_sum: Mapped[int] = mapped_column(BigInteger)
    output_tokens_sum: Mapped[int] = mapped_column(BigInteger)
