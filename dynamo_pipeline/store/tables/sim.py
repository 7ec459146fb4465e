"""Tables owned by the simulator: one row per replay (``sim_runs``) and its per-window results
(``sim_windows``). A run records the policy, mode, trace and scaling, and its summary; windows hold
energy (GPU and whole server), power, servers and GPUs on, latency percentiles, SLO attainment,
fast-path counters, GPU-hours, cost and carbon."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dynamo_pipeline.store.tables.base import Base


class SimRun(Base):
    __tablename__ = "sim_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    label: Mapped[str] = mapped_column(String(128), index=True)  # groups the runs of one `dynamo evaluate`
    policy: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    trace: Mapped[str] = mapped_column(Text)
    scale_factor: Mapped[float] = mapped_column(Float)
    scale_method: Mapped[str] = mapped_column(String(16))
    error_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    windows: Mapped[int] = mapped_column(Integer)
    gpu_energy_kwh: Mapped[float] = mapped_column(Float)
    server_energy_kwh: Mapped[float] = mapped_column(Float)
    ttft_p99_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    tbt_p99_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    slo_attainment: Mapped[float] = mapped_column(Float)
    summary_json: Mapped[str] = mapped_column(Text)


class SimWindow(Base):
    __tablename__ = "sim_windows"

    run_id: Mapped[int] = mapped_column(ForeignKey("sim_runs.id", ondelete="CASCADE"), primary_key=True)
    window: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_start_s: Mapped[float] = mapped_column(Float)
    requests: Mapped[int] = mapped_column(BigInteger)
    dropped: Mapped[int] = mapped_column(BigInteger)
    moved: Mapped[int] = mapped_column(BigInteger)
    reordered: Mapped[int] = mapped_column(BigInteger)
    gpu_energy_j: Mapped[float] = mapped_column(Float)
    server_energy_j: Mapped[float] = mapped_column(Float)
    gpu_power_w: Mapped[float] = mapped_column(Float)
    server_power_w: Mapped[float] = mapped_column(Float)
    servers_on: Mapped[int] = mapped_column(Integer)
    gpus_on: Mapped[int] = mapped_column(Integer)
    gpus_active: Mapped[int] = mapped_column(Integer)
    servers_started: Mapped[int] = mapped_column(Integer)
    servers_drained: Mapped[int] = mapped_column(Integer)
    reshards: Mapped[int] = mapped_column(Integer)
    ttft_p50_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    ttft_p99_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    tbt_p50_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    tbt_p99_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    ttft_attainment: Mapped[float | None] = mapped_column(Float, nullable=True)
    tbt_attainment: Mapped[float | None] = mapped_column(Float, nullable=True)
    slo_attainment: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_hours: Mapped[float] = mapped_column(Float)
    cost_usd: Mapped[float] = mapped_column(Float)
    carbon_g: Mapped[float] = mapped_column(Float)
