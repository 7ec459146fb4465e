"""Idempotent, crash-safe loading of request logs into the store.

:func:`ingest_file` reads a file block by block; each block's requests, quarantined rows and the
run's counters are written in one transaction, so a run killed half way leaves whole blocks behind
and nothing half-written. Requests are keyed by (arrival time, ``request_id``) and inserted with ON CONFLICT DO
NOTHING (a bulk COPY through a temporary table on PostgreSQL), quarantined rows by (file, line), so
re-running a file — after a crash, or a file that overlaps one already loaded — adds nothing twice
and ends with exact counts: rows read = rows stored (new + already present) + rows quarantined.
Window loads for the run's time span are recomputed at the end (:mod:`.windows`).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import insert, select, update
from tqdm import tqdm

from dynamo_pipeline.config import Settings
from dynamo_pipeline.ingest.mapping import ColumnMapping, MappingError, sniff_mapping
from dynamo_pipeline.ingest.readers import (
    RawBlock,
    check_columns,
    read_csv_blocks,
    read_jsonl_blocks,
    read_parquet_blocks,
)
from dynamo_pipeline.ingest.validate import REQUEST_COLUMNS, IdSet, Normalised, normalise
from dynamo_pipeline.util import prefetch
from dynamo_pipeline.ingest.windows import refresh_window_loads
from dynamo_pipeline.store.db import Store
from dynamo_pipeline.store.tables.ingest import IngestRun, QuarantinedRow


@dataclass
class IngestSummary:
    source: str
    run_id: int
    rows_read: int = 0
    rows_inserted: int = 0
    rows_already_present: int = 0
    rows_quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    first_arrival_us: int | None = None
    last_arrival_us: int | None = None
    seconds: float = 0.0

    @property
    def rows_stored(self) -> int:
        return self.rows_inserted + self.rows_already_present

    @property
    def balanced(self) -> bool:
        return self.rows_read == self.rows_stored + self.rows_quarantined

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds else float("nan")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def _detect_format(path: Path, mapping: ColumnMapping | None) -> str:
    if mapping is not None:
        return mapping.format
    name = path.name.lower().removesuffix(".gz")
    for ext, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".parquet", "parquet"), (".csv", "csv")):
        if name.endswith(ext):
            return fmt
    return "csv"


def _blocks(path: Path, mapping: ColumnMapping | None, block_rows: int):
    """Yield (mapping, block), resolving a preset mapping from a CSV header when none is given."""
    fmt = _detect_format(path, mapping)
    if fmt == "csv":
        for header, block in read_csv_blocks(path, mapping, block_rows):
            if mapping is None:
                mapping = sniff_mapping(path, header)
                if mapping.default_tenant is None:  # the Azure files are one workload each
                    kind = next((k for k in ("code", "conv") if k in path.name.lower()), None)
                    mapping = mapping.model_copy(update={"default_tenant": kind})
            check_columns(path, header, mapping)
            yield mapping, block
    elif mapping is None:
        raise MappingError(f"{path}: {fmt} logs need --mapping FILE.yaml naming their columns")
    elif fmt == "jsonl":
        for block in read_jsonl_blocks(path, block_rows):
            yield mapping, block
    else:
        for block in read_parquet_blocks(path, block_rows):
            check_columns(path, list(block.frame.columns), mapping)
            yield mapping, block


def _insert_requests(conn, store: Store, good: pd.DataFrame) -> int:
    """Insert new requests, skipping ids already stored; returns how many were new."""
    if good.empty:
        return 0
    cols = REQUEST_COLUMNS + ["ingest_run_id"]
    if store.dialect == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS _ingest_requests (LIKE requests INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            # pyarrow writes the CSV in C++ (5x faster than DataFrame.to_csv); strings come quoted,
            # nulls as unquoted empty fields, which COPY's CSV format reads as NULL.
            out = pa.BufferOutputStream()
            pa_csv.write_csv(pa.Table.from_pandas(good[cols], preserve_index=False), out,
                             pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
            with cur.copy(f"COPY _ingest_requests ({', '.join(cols)}) FROM STDIN WITH (FORMAT csv)") as cp:
                cp.write(out.getvalue().to_pybytes())
            cur.execute(f"INSERT INTO requests ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _ingest_requests "
                        "ON CONFLICT (arrived_at_us, request_id) DO NOTHING")
            return cur.rowcount
    raw = conn.connection.driver_connection
    cols = [c for c in cols if c not in ("tenant", "prompt_text") or good[c].notna().any()]  # NULL by default
    rows = list(zip(*(good[c].tolist() for c in cols)))
    cur = raw.cursor()
    cur.executemany(
        f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) ON CONFLICT (arrived_at_us, request_id) DO NOTHING",
        rows,
    )
    return cur.rowcount


def _insert_quarantine(conn, store: Store, rows: list[dict]) -> None:
    if not rows:
        return
    t = QuarantinedRow.__table__
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    conn.execute(dialect_insert(t).on_conflict_do_nothing(index_elements=["file_sha256", "line"]), rows)


def _abandon_stale_runs(store: Store, sha: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(IngestRun).where(IngestRun.file_sha256 == sha, IngestRun.status == "running")
                     .values(status="abandoned", error="superseded by a later run of the same file"))


def ingest_file(store: Store, path: str | Path, settings: Settings, mapping: ColumnMapping | None = None,
                progress: bool | None = None, stop_after_blocks: int | None = None) -> IngestSummary:
    """Load one log file. ``mapping`` None sniffs a preset from a CSV header (the Azure trace).
    ``stop_after_blocks`` (tests) raises :class:`KeyboardInterrupt` after that many committed blocks,
    as a kill would."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    t0 = time.perf_counter()
    sha = file_sha256(path)
    _abandon_stale_runs(store, sha)
    with store.engine.begin() as conn:
        run_id = conn.execute(insert(IngestRun).values(
            source=str(path), file_sha256=sha, reader=_detect_format(path, mapping), status="running",
            started_at=datetime.now(timezone.utc), rows_read=0, rows_inserted=0, rows_already_present=0,
            rows_quarantined=0,
        ).returning(IngestRun.id)).scalar_one()
    s = IngestSummary(source=str(path), run_id=run_id)
    now_us = int(time.time() * 1e6)
    seen = IdSet()
    bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"ingest {path.name}",
               disable=(None if progress is None else not progress), leave=False)
    try:
        def parsed():
            for m, block in _blocks(path, mapping, settings.ingest.chunk_rows):
                yield block, normalise(block, m, settings.ingest, now_us, settings.hardware.model, seen)

        # Parse and validate the next block in a thread while this one is written: the database
        # driver and pandas' parser both release the GIL, so the two overlap on two cores.
        for k, (block, norm) in enumerate(prefetch(parsed(), depth=2)):
            _write_block(store, s, sha, block, norm)
            bar.update(min(block.bytes_read, bar.total - bar.n) if bar.total else block.bytes_read)
            if stop_after_blocks is not None and k + 1 >= stop_after_blocks:
                raise KeyboardInterrupt(f"stopped after {k + 1} blocks (test hook)")
        if s.first_arrival_us is not None:
            refresh_window_loads(store, settings, s.first_arrival_us, s.last_arrival_us)
        with store.engine.begin() as conn:
            conn.execute(update(IngestRun).where(IngestRun.id == run_id).values(
                status="complete", finished_at=datetime.now(timezone.utc)))
    except Exception as e:
        with store.engine.begin() as conn:
            conn.execute(update(IngestRun).where(IngestRun.id == run_id).values(
                status="failed", finished_at=datetime.now(timezone.utc), error=f"{type(e).__name__}: {e}"))
        raise
    finally:
        bar.close()
    s.seconds = time.perf_counter() - t0
    if not s.balanced:  # never expected: a bug in the loader, not in the data
        raise RuntimeError(f"{path}: counts do not balance: {s}")
    return s


def _write_block(store: Store, s: IngestSummary, sha: str, block: RawBlock, norm: Normalised) -> None:
    good = norm.good
    good["ingest_run_id"] = s.run_id
    q = [dict(ingest_run_id=s.run_id, source=s.source, file_sha256=sha, line=ln, raw=raw, reason=why)
         for ln, raw, why in block.rejected]
    if len(norm.bad_pos):
        raws = block.raw(norm.bad_pos)
        q += [dict(ingest_run_id=s.run_id, source=s.source, file_sha256=sha, line=int(ln), raw=r, reason=str(why))
              for ln, r, why in zip(block.lines[norm.bad_pos], raws, norm.bad_reason)]
    n_read = len(block.frame) + len(block.rejected)
    with store.engine.begin() as conn:
        new = _insert_requests(conn, store, good)
        _insert_quarantine(conn, store, q)
        conn.execute(update(IngestRun).where(IngestRun.id == s.run_id).values(
            rows_read=IngestRun.rows_read + n_read,
            rows_inserted=IngestRun.rows_inserted + new,
            rows_already_present=IngestRun.rows_already_present + (len(good) - new),
            rows_quarantined=IngestRun.rows_quarantined + len(q),
            first_arrival_us=_min(s.first_arrival_us, good["arrived_at_us"]),
            last_arrival_us=_max(s.last_arrival_us, good["arrived_at_us"]),
        ))
    s.rows_read += n_read
    s.rows_inserted += new
    s.rows_already_present += len(good) - new
    s.rows_quarantined += len(q)
    s.reasons.update(r["reason"] for r in q)
    s.first_arrival_us = _min(s.first_arrival_us, good["arrived_at_us"])
    s.last_arrival_us = _max(s.last_arrival_us, good["arrived_at_us"])


def _min(cur: int | None, col: pd.Series) -> int | None:
    if col.empty:
        return cur
    v = int(col.min())
    return v if cur is None else min(cur, v)


def _max(cur: int | None, col: pd.Series) -> int | None:
    if col.empty:
        return cur
    v = int(col.max())
    return v if cur is None else max(cur, v)


def ingest_paths(store: Store, paths: list[str | Path], settings: Settings, mapping: ColumnMapping | None = None,
                 progress: bool | None = None) -> list[IngestSummary]:
    """Ingest several files (directories are walked for *.csv, *.jsonl, *.parquet, optionally .gz)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(x for x in p.rglob("*") if x.is_file() and
                            x.name.lower().removesuffix(".gz").endswith((".csv", ".jsonl", ".ndjson", ".parquet")))
        else:
            files.append(p)
    if not files:
        raise FileNotFoundError(f"no log files found in {[str(p) for p in paths]}")
    return [ingest_file(store, f, settings, mapping, progress) for f in files]


def quarantine_frame(store: Store, run_id: int | None = None, limit: int = 20) -> pd.DataFrame:
    t = QuarantinedRow.__table__
    q = select(t.c.source, t.c.line, t.c.reason, t.c.raw).order_by(t.c.id.desc()).limit(limit)
    if run_id is not None:
        q = q.where(t.c.ingest_run_id == run_id)
    with store.engine.connect() as conn:
        return pd.DataFrame(conn.execute(q).fetchall(), columns=["source", "line", "reason", "raw"])


def runs_frame(store: Store) -> pd.DataFrame:
    t = IngestRun.__table__
    with store.engine.connect() as conn:
        rows = conn.execute(select(t).order_by(t.c.id)).mappings().fetchall()
    return pd.DataFrame([dict(r) for r in rows])


__all__ = ["IngestSummary", "ingest_file", "ingest_paths", "quarantine_frame", "runs_frame"]
