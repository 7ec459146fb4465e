"""Simulation results in the store: :func:`save_result` writes a run and its windows
(``sim_runs``, ``sim_windows``); :func:`runs_frame` and :func:`windows_frame` read them back as
DataFrames."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pandas as pd
from sqlalchemy import insert, select

from dynamo_pipeline.sim.replay import SimResult
from dynamo_pipeline.store.db import Store
from dynamo_pipeline.store.tables.sim import SimRun, SimWindow

_WINDOW_COLUMNS = [c.name for c in SimWindow.__table__.columns if c.name != "run_id"]


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def save_result(store: Store, result: SimResult, label: str) -> int:
    """Store one replay; returns its run id."""
    s, m = result.summary, result.meta
    run = dict(created_at=datetime.now(timezone.utc), label=label, policy=result.policy, mode=result.mode,
               trace=str(m.get("source", "")), scale_factor=float(m.get("scale_factor", 1.0)),
               scale_method=str(m.get("scale_method", "none")), error_rate=m.get("error_rate"),
               requests=s["requests"], windows=len(result.windows), gpu_energy_kwh=s["gpu_energy_kwh"],
               server_energy_kwh=s["server_energy_kwh"], ttft_p99_s=_clean(s["ttft_p99_s"]),
               tbt_p99_s=_clean(s["tbt_p99_s"]), slo_attainment=s["slo_attainment"],
               summary_json=json.dumps({k: _clean(v) for k, v in {**s, "meta": {k: v for k, v in m.items()
                                                                                   if isinstance(v, (str, int, float, list))}}.items()},
                                       default=str))
    with store.engine.begin() as conn:
        run_id = conn.execute(insert(SimRun).values(**run).returning(SimRun.id)).scalar_one()
        rows = [{k: _clean(v) for k, v in r.items()} | {"run_id": run_id}
                for r in result.windows[_WINDOW_COLUMNS].to_dict("records")]
        if rows:
            conn.execute(insert(SimWindow), rows)
    return int(run_id)


def runs_frame(store: Store, label: str | None = None) -> pd.DataFrame:
    """Stored runs (newest first), optionally those of one label."""
    q = select(SimRun).order_by(SimRun.id.desc())
    if label is not None:
        q = q.where(SimRun.label == label)
    with store.engine.connect() as conn:
        return pd.read_sql(q, conn)


def windows_frame(store: Store, run_id: int) -> pd.DataFrame:
    with store.engine.connect() as conn:
        return pd.read_sql(select(SimWindow).where(SimWindow.run_id == run_id).order_by(SimWindow.window), conn)
