"""Ingest throughput: 1M rows drawn from the Azure length distributions, into SQLite and PostgreSQL,
validation and de-duplication included, beside pandas.read_csv (+ time parsing) and a bare sqlite3
executemany of the same rows as ceilings measured in the same run."""

from __future__ import annotations

import gzip
import os
import sqlite3
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import text

from bench.common import pg_url, timed
from dynamo_pipeline.config import load_settings
from dynamo_pipeline.ingest import ingest_file
from dynamo_pipeline.store import open_store, upgrade

ROWS = int(os.environ.get("BENCH_INGEST_ROWS", 1_000_000))
SAMPLE = Path(__file__).resolve().parent.parent / "samples/azure_llm_2023/AzureLLMInferenceTrace_conv.csv.gz"


def make_file(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    src = pd.read_csv(gzip.open(SAMPLE))
    idx = rng.integers(0, len(src), rows)
    t0 = pd.Timestamp("2024-01-01")
    gaps = rng.exponential(86400 * 7 / rows, rows).cumsum()
    ts = (t0 + pd.to_timedelta(gaps, unit="s")).strftime("%Y-%m-%d %H:%M:%S.%f")
    pd.DataFrame({"TIMESTAMP": ts, "ContextTokens": src.ContextTokens.to_numpy()[idx],
                  "GeneratedTokens": src.GeneratedTokens.to_numpy()[idx]}).to_csv(path, index=False)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    f = tmp / "azure_1m.csv"
    make_file(f, ROWS)
    print(f"file: {ROWS:,} rows, {f.stat().st_size / 1e6:.0f} MB")

    def pandas_ceiling():
        df = pd.read_csv(f)
        pd.to_datetime(df.TIMESTAMP, format="ISO8601")

    med, _ = timed(pandas_ceiling)
    print(f"{'pandas.read_csv + to_datetime (ceiling)':48s} {ROWS / med / 1e3:8.0f} k rows/s  (median {med:.2f} s)")

    df = pd.read_csv(f)
    rows = list(zip(df.TIMESTAMP.tolist(), df.ContextTokens.tolist(), df.GeneratedTokens.tolist()))
    bare_db = tmp / "bare.db"

    def bare_setup():
        bare_db.unlink(missing_ok=True)

    def bare():
        c = sqlite3.connect(bare_db)
        c.execute("CREATE TABLE t (ts TEXT, i INTEGER, o INTEGER)")
        c.executemany("INSERT INTO t VALUES (?,?,?)", rows)
        c.commit()
        c.close()

    bare_med, _ = timed(bare, setup=bare_setup)
    print(f"{'bare sqlite3 executemany (ceiling)':48s} {ROWS / bare_med / 1e3:8.0f} k rows/s  (median {bare_med:.2f} s)")

    db = tmp / "dynamo.db"
    settings = load_settings(database_url=f"sqlite:///{db}")

    def sqlite_setup():
        for p in tmp.glob("dynamo.db*"):
            p.unlink()
        upgrade(settings.database_url)

    store = None

    def run_sqlite():
        nonlocal store
        store = open_store(settings.database_url)
        s = ingest_file(store, f, settings, progress=False)
        assert s.balanced and s.rows_inserted == ROWS, s
        store.dispose()

    med, _ = timed(run_sqlite, setup=sqlite_setup)
    print(f"{'dynamo ingest → SQLite (validate, dedupe, windows)':48s} {ROWS / med / 1e3:8.0f} k rows/s  "
          f"(median {med:.2f} s; {bare_med / med:.2f}× bare sqlite3)")

    st = open_store(settings.database_url)
    med_re, _ = timed(lambda: ingest_file(st, f, settings, progress=False), repeat=1)
    print(f"{'re-ingest same file → SQLite (all already present)':48s} {ROWS / med_re / 1e3:8.0f} k rows/s")
    st.dispose()

    url = pg_url()
    if url is None:
        print("PostgreSQL: not reachable (set DYNAMO_TEST_PG_URL); skipped")
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    base = open_store(url)
    with base.engine.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    purl = url + ("&" if "?" in url else "?") + f"options=-csearch_path%3D{schema}"
    pset = load_settings(database_url=purl)

    def pg_setup():
        with base.engine.begin() as c:
            c.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            c.execute(text(f"CREATE SCHEMA {schema}"))
        upgrade(purl)

    def run_pg():
        s = open_store(purl)
        r = ingest_file(s, f, pset, progress=False)
        assert r.balanced and r.rows_inserted == ROWS, r
        s.dispose()

    try:
        med, _ = timed(run_pg, setup=pg_setup)
        print(f"{'dynamo ingest → PostgreSQL (COPY, dedupe, windows)':48s} {ROWS / med / 1e3:8.0f} k rows/s  (median {med:.2f} s)")
    finally:
        with base.engine.begin() as c:
            c.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        base.dispose()


if __name__ == "__main__":
    main()
