"""Writing profiles: the CSV contract, the resumable partial file, and the `profiles` table.

A profile is a DataFrame whose columns are exactly :data:`PROFILE_COLUMNS` (DESIGN §3). A job
appends each finished grid point to ``<gpu>/<model>.csv.partial`` (flushed at once) beside a JSON
sidecar with the run id and the grid; a job started again with the same grid skips the points
already in the partial file, and the finished file is renamed to ``<model>.csv``. The same rows
go to the store's ``profiles`` table with the run id, backend and time (idempotent per point).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from sqlalchemy import delete, select

from dynamo_pipeline.store import Store

PROFILE_COLUMNS = [
    "gpu", "model", "class_name", "tp", "freq_mhz", "load_rps", "throughput_rps", "ttft_p50_s",
    "ttft_p99_s", "tbt_p50_s", "tbt_p99_s", "power_w", "energy_per_request_j", "source", "versions",
]
KEY_COLUMNS = ["class_name", "tp", "freq_mhz", "load_rps"]
ROOT = Path(__file__).resolve().parents[2] / "profiles"


def profile_path(gpu: str, model: str, root: str | os.PathLike | None = None) -> Path:
    return Path(root or ROOT) / gpu / f"{model}.csv"


def point_key(class_name: str, tp: int, freq_mhz: int, load_rps: float) -> tuple:
    return (class_name, int(tp), int(freq_mhz), round(float(load_rps), 6))


class PartialProfile:
    """The resumable partial CSV of one job (see the module docstring)."""

    def __init__(self, final: Path, meta: dict):
        self.final = final
        self.partial = final.with_name(final.name + ".partial")
        self.sidecar = final.with_name(final.name + ".run.json")
        self.meta = meta

    def resume_meta(self) -> dict | None:
        """The sidecar of an interrupted run with the same grid spec, or None."""
        if not (self.partial.exists() and self.sidecar.exists()):
            return None
        old = json.loads(self.sidecar.read_text())
        return old if old.get("spec") == self.meta.get("spec") else None

    def start(self, meta: dict) -> set[tuple]:
        """Begin (or resume) a run; returns the keys of points already written."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        done: set[tuple] = set()
        if self.partial.exists() and self.sidecar.exists() and json.loads(self.sidecar.read_text()).get("run_id") == meta["run_id"]:
            df = pd.read_csv(self.partial)
            done = {point_key(*r) for r in df[KEY_COLUMNS].itertuples(index=False)}
        else:
            pd.DataFrame(columns=PROFILE_COLUMNS).to_csv(self.partial, index=False)
        self.sidecar.write_text(json.dumps(meta, indent=1))
        return done

    def append(self, rows: pd.DataFrame) -> None:
        with open(self.partial, "a") as f:
            rows[PROFILE_COLUMNS].to_csv(f, header=False, index=False)
            f.flush()
            os.fsync(f.fileno())

    def finish(self) -> pd.DataFrame:
        df = pd.read_csv(self.partial).drop_duplicates(KEY_COLUMNS, keep="last")
        df = df.sort_values(KEY_COLUMNS).reset_index(drop=True)
        df.to_csv(self.final, index=False, float_format="%.6g")
        self.partial.unlink()
        self.sidecar.unlink()
        return df


def write_rows(store: Store, rows: pd.DataFrame, run_id: str, backend: str) -> int:
    """Insert profile rows for ``run_id`` into the store; points already stored for that run are
    replaced (a resumed job may write a point twice). Returns the rows written."""
    from dynamo_pipeline.store.tables.profiles import ProfileRow

    now = datetime.now(timezone.utc)
    with store.session() as s, s.begin():
        for r in rows.to_dict("records"):
            s.execute(delete(ProfileRow).where(
                ProfileRow.profile_version == run_id, ProfileRow.gpu == r["gpu"], ProfileRow.model == r["model"],
                ProfileRow.class_name == r["class_name"], ProfileRow.tp == int(r["tp"]),
                ProfileRow.freq_mhz == int(r["freq_mhz"]), ProfileRow.load_rps == float(r["load_rps"])))
            s.add(ProfileRow(profile_version=run_id, backend=backend, profiled_at=now,
                             **{k: (None if pd.isna(v) else v) for k, v in r.items()}))
    return len(rows)


def read_rows(store: Store, gpu: str, model: str, run_id: str | None = None) -> pd.DataFrame:
    """A profile from the store (the newest run unless ``run_id``), columns as the CSV contract."""
    from dynamo_pipeline.store.tables.profiles import ProfileRow

    with store.session() as s:
        q = select(ProfileRow).where(ProfileRow.gpu == gpu, ProfileRow.model == model)
        if run_id is None:
            newest = s.execute(select(ProfileRow.profile_version).where(ProfileRow.gpu == gpu, ProfileRow.model == model)
                               .order_by(ProfileRow.profiled_at.desc()).limit(1)).scalar()
            if newest is None:
                return pd.DataFrame(columns=PROFILE_COLUMNS)
            run_id = newest
        rows = s.execute(q.where(ProfileRow.profile_version == run_id)).scalars().all()
        df = pd.DataFrame([{c: getattr(r, c) for c in PROFILE_COLUMNS} for r in rows], columns=PROFILE_COLUMNS)
    return df.sort_values(KEY_COLUMNS).reset_index(drop=True)
