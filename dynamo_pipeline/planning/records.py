"""The planner's records in the store: plans (solver, status, gap, times, flags) and carbon intensity.

Plain data in, plain data out: :func:`save_plan` writes a :class:`~.extract.PoolPlan` (and the
cluster level's servers per pool) to ``plans``; :func:`read_plan` returns a :class:`StoredPlan`.
:func:`load_carbon_csv` loads an hourly grid-intensity table (``dynamo carbon load``);
:func:`carbon_at` gives the intensity for an hour, or the constant default when none is loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd
from sqlalchemy import delete, select

from dynamo_pipeline.planning.extract import InstanceGroup, PoolPlan
from dynamo_pipeline.planning.problem import PlanningError
from dynamo_pipeline.store.db import Store
from dynamo_pipeline.store.tables.planning import CarbonIntensity, PlanRow


@dataclass
class StoredPlan:
    id: int
    created_at: datetime
    level: str
    window_start_s: int
    window_end_s: int
    solver: str
    status: str
    gap: float | None
    build_s: float
    solve_s: float
    objective: float
    energy_j: float
    load_source: str
    flags: list[str]
    groups: list[InstanceGroup]
    servers_by_pool: dict[str, int]


def save_plan(store: Store, plan: PoolPlan, level: str, window_start_s: int, window_end_s: int,
              load_source: str, servers_by_pool: dict[str, int] | None = None) -> int:
    body = {"groups": [g.__dict__ for g in plan.groups], "servers_by_pool": servers_by_pool or {},
            "shortfall_rps": plan.shortfall_rps}
    row = PlanRow(created_at=datetime.now(timezone.utc), level=level, window_start_s=window_start_s,
                  window_end_s=window_end_s, solver=plan.solver, status=plan.status, gap=plan.gap,
                  build_s=plan.build_s, solve_s=plan.solve_s, objective=plan.objective, energy_j=plan.score.energy_j,
                  load_source=load_source, flags_json=json.dumps(plan.flags), body_json=json.dumps(body))
    with store.session() as s:
        s.add(row)
        s.commit()
        return int(row.id)


def read_plan(store: Store, plan_id: int | None = None) -> StoredPlan:
    """A plan by id, or the newest."""
    with store.session() as s:
        q = select(PlanRow).order_by(PlanRow.id.desc()).limit(1) if plan_id is None else select(PlanRow).where(PlanRow.id == plan_id)
        row = s.scalars(q).first()
    if row is None:
        raise PlanningError("no plan in the store yet: run `dynamo plan`" if plan_id is None else f"no plan with id {plan_id}")
    body = json.loads(row.body_json)
    return StoredPlan(id=row.id, created_at=row.created_at, level=row.level, window_start_s=row.window_start_s,
                      window_end_s=row.window_end_s, solver=row.solver, status=row.status, gap=row.gap,
                      build_s=row.build_s, solve_s=row.solve_s, objective=row.objective, energy_j=row.energy_j,
                      load_source=row.load_source, flags=json.loads(row.flags_json),
                      groups=[_group(g) for g in body["groups"]], servers_by_pool=body["servers_by_pool"])


_TIME_COLS = ("hour", "timestamp", "datetime", "time")
_VALUE_COLS = ("g_per_kwh", "carbon_intensity", "intensity", "gco2_per_kwh")


def load_carbon_csv(store: Store, path: str | os.PathLike, region: str = "default") -> int:
    """Load an hourly intensity CSV (a time column — hour/timestamp/datetime, ISO or epoch seconds —
    and g_per_kwh/carbon_intensity); replaces the hours it covers. Returns the rows loaded."""
    df = pd.read_csv(path)
    cols = {c.lower(): c for c in df.columns}
    tcol = next((cols[c] for c in _TIME_COLS if c in cols), None)
    vcol = next((cols[c] for c in _VALUE_COLS if c in cols), None)
    if tcol is None or vcol is None:
        raise PlanningError(f"{path}: need a time column ({', '.join(_TIME_COLS)}) and an intensity column "
                            f"({', '.join(_VALUE_COLS)}); found {list(df.columns)}")
    raw = df[tcol]
    ts = pd.to_datetime(raw, unit="s", utc=True) if pd.api.types.is_numeric_dtype(raw) else pd.to_datetime(raw, utc=True, format="mixed")
    vals = pd.to_numeric(df[vcol], errors="coerce")
    bad = vals.isna() | (vals < 0) | ts.isna()
    if bad.any():
        raise PlanningError(f"{path}: {int(bad.sum())} rows have a bad time or a negative/missing intensity "
                            f"(first at line {int(bad.idxmax()) + 2}); fix them and load again")
    hours = [int(x.timestamp()) // 3600 * 3600 for x in ts]
    table = pd.DataFrame({"h": hours, "v": vals.to_numpy()}).groupby("h", sort=True)["v"].mean()
    with store.session() as s:
        s.execute(delete(CarbonIntensity).where(CarbonIntensity.region == region,
                                                CarbonIntensity.hour_start_s.in_([int(h) for h in table.index])))
        s.add_all([CarbonIntensity(region=region, hour_start_s=int(h), g_per_kwh=float(v), source=str(path))
                   for h, v in table.items()])
        s.commit()
    return len(table)


def carbon_at(store: Store | None, t: datetime, default_g_per_kwh: float, region: str = "default") -> float:
    """Grid intensity for the hour containing ``t``; the default when no table row covers it."""
    if store is None:
        return default_g_per_kwh
    hour = int(t.timestamp()) // 3600 * 3600
    with store.session() as s:
        v = s.scalar(select(CarbonIntensity.g_per_kwh).where(CarbonIntensity.region == region,
                                                             CarbonIntensity.hour_start_s == hour))
    return default_g_per_kwh if v is None else float(v)


def _group(g: dict) -> InstanceGroup:
    """A stored instance group (JSON lists back to tuples; plans stored before mixed instances have no mix)."""
    return InstanceGroup(**{**g, "mix": tuple((str(c), float(sh)) for c, sh in g.get("mix", ()))})
