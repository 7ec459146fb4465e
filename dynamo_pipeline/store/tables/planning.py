"""Tables owned by the planner: plans (how each was obtained), published schedules, carbon intensity.

``plans`` keeps every plan the planner made — solver, status, optimality gap, build and solve time,
flags — whether or not it was published. ``schedules`` holds published schedules: one row per
version, never updated (the publisher refuses a version that exists with another body), with the
signed JSON document. ``carbon_intensity`` is the grid's hourly intensity loaded by
``dynamo carbon load``; hours without a row use ``carbon.default_g_per_kwh``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dynamo_pipeline.store.tables.base import Base


class PlanRow(Base):
    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    level: Mapped[str] = mapped_column(String(16))            # pool | cluster | nightly
    window_start_s: Mapped[int] = mapped_column(BigInteger, index=True)
    window_end_s: Mapped[int] = mapped_column(BigInteger)
    solver: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))           # optimal | feasible | greedy | infeasible
    gap: Mapped[float | None] = mapped_column(Float, nullable=True)
    build_s: Mapped[float] = mapped_column(Float)
    solve_s: Mapped[float] = mapped_column(Float)
    objective: Mapped[float] = mapped_column(Float)
    energy_j: Mapped[float] = mapped_column(Float)
    load_source: Mapped[str] = mapped_column(String(16))      # forecast | observed | constant | mixed
    flags_json: Mapped[str] = mapped_column(Text)
    body_json: Mapped[str] = mapped_column(Text)              # instance groups, servers per pool


class ScheduleRow(Base):
    __tablename__ = "schedules"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_from_s: Mapped[int] = mapped_column(BigInteger, index=True)
    valid_to_s: Mapped[int] = mapped_column(BigInteger)
    plan_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)               # the signed JSON as published


class CarbonIntensity(Base):
    __tablename__ = "carbon_intensity"

    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour_start_s: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    g_per_kwh: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(Text)
