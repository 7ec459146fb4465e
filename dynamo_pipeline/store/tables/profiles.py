"""Table owned by profiling: energy-performance profile rows (DESIGN §3), one per
(run, gpu, model, class, tp, clock, load) with the measured metrics and their provenance.

``profile_version`` is the profiling job's run id: a resumed job keeps its id, so the rows of one
run form one profile; readers take the newest run unless told otherwise.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dynamo_pipeline.store.tables.base import Base


class ProfileRow(Base):
    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    profile_version: Mapped[str] = mapped_column(String(64), index=True)
    gpu: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    class_name: Mapped[str] = mapped_column(String(8))
    tp: Mapped[int] = mapped_column(Integer)
    freq_mhz: Mapped[int] = mapped_column(Integer)
    load_rps: Mapped[float] = mapped_column(Float)
    throughput_rps: Mapped[float] = mapped_column(Float)
    ttft_p50_s: Mapped[float] = mapped_column(Float)
    ttft_p99_s: Mapped[float] = mapped_column(Float)
    tbt_p50_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    tbt_p99_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    power_w: Mapped[float] = mapped_column(Float)
    energy_per_request_j: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))
    backend: Mapped[str] = mapped_column(String(16))
    versions: Mapped[str] = mapped_column(Text)
    profiled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("profile_version", "gpu", "model", "class_name", "tp", "freq_mhz", "load_rps",
                         name="uq_profiles_point"),
    )
