"""The steps the scheduled pipeline runs, one function each, shared by the Airflow DAGs and the CLI.

Each function takes :class:`~dynamo_pipeline.config.Settings` (plus plain arguments) and returns a
JSON-serialisable ``dict``, so an Airflow task can hand it to the next task through XCom and
``dynamo pipeline …`` can print it. No Airflow import happens here: the DAGs in ``dags/`` only wire
these functions together, and every step also runs (and is tested) without Airflow.

Steps today: :func:`run_config` (validate a manual run's params), :func:`ingest_new_logs` (load the
files of an inbox that were not loaded before), :func:`refresh_windows` (recompute window loads for a
span and summarise the newest window), :func:`write_reports` (run the SQL reports into files) and
:func:`check_overrun` (report a run that took longer than its window). Forecast, plan, publish and
acknowledgement steps join here as their stages land, one function (and one DAG task) each.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import text

from dynamo_pipeline.config import ConfigError, Settings, load_settings
from dynamo_pipeline.ingest import ingest_paths, refresh_window_loads
from dynamo_pipeline.ingest.load import file_sha256
from dynamo_pipeline.store.db import Store, open_store

log = logging.getLogger(__name__)

LOG_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")

#: Objective weights a manual run may set (relative; they need not sum to 1).
OBJECTIVE_KEYS = ("energy", "carbon", "cost")


def _open(settings: Settings) -> Store:
    store = open_store(settings.database_url)
    store.check_current()
    return store


def run_config(settings: Settings, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a run's params and return the effective run configuration.

    ``params`` may hold ``objective_weights`` ({energy, carbon, cost} ≥ 0, not all zero; keys left
    out weigh 0; none given: energy only),
    ``slo_overrides`` ({ttft_p99_s, tbt_p99_s} > 0, merged into the settings' SLOs and validated by
    them) and ``whatif_trace`` (a path that must exist, or empty). Raises :class:`ConfigError`
    naming the bad key. The result carries the database URL with any password hidden."""
    params = dict(params or {})
    weights = {k: float(v) for k, v in (params.get("objective_weights") or {}).items()}
    bad = set(weights) - set(OBJECTIVE_KEYS)
    if bad:
        raise ConfigError(f"objective_weights: unknown keys {sorted(bad)}; allowed: {list(OBJECTIVE_KEYS)}")
    if any(v < 0 for v in weights.values()):
        raise ConfigError(f"objective_weights: weights must be ≥ 0, got {weights}")
    # no weights at all: minimise energy; weights given: the keys left out weigh nothing
    weights = {k: weights.get(k, 0.0) for k in OBJECTIVE_KEYS} if weights else {"energy": 1.0, "carbon": 0.0, "cost": 0.0}
    if not any(weights.values()):
        raise ConfigError("objective_weights: at least one weight must be > 0")
    slo_over = {k: v for k, v in (params.get("slo_overrides") or {}).items() if v is not None}
    slo = settings.slo.model_dump()
    slo.update(slo_over)
    effective = load_settings(None, database_url=settings.database_url, home=settings.home, slo=slo)
    trace = params.get("whatif_trace") or None
    if trace is not None and not Path(trace).exists():
        raise ConfigError(f"whatif_trace: {trace} does not exist; give the path of a request log or leave it empty")
    from sqlalchemy.engine import make_url

    return {
        "database": make_url(settings.database_url).render_as_string(hide_password=True),
        "window_s": effective.window_s,
        "objective_weights": weights,
        "slo": {"ttft_p99_s": effective.slo.ttft_p99_s, "tbt_p99_s": effective.slo.tbt_p99_s},
        "whatif_trace": trace,
    }


def _log_files(inbox: Path) -> list[Path]:
    return sorted(p for p in inbox.rglob("*") if p.is_file()
                  and p.name.lower().removesuffix(".gz").endswith(LOG_SUFFIXES))


def ingest_new_logs(settings: Settings, inbox: str | Path) -> dict[str, Any]:
    """Ingest the files under ``inbox`` that no complete ingest run has loaded (same SHA-256).

    Returns counts and the arrival span (µs) of the rows read, so the next step knows which windows
    changed. A file that changed since it was loaded is loaded again (rows already stored are
    skipped by the loader). Window loads of the span are refreshed by the loader itself."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        raise FileNotFoundError(f"inbox {inbox} is not a directory; create it or point the "
                                "`dynamo_inbox` Airflow Variable (or --inbox) at the log drop folder")
    store = _open(settings)
    try:
        with store.engine.connect() as conn:
            done = {r[0] for r in conn.execute(text("SELECT file_sha256 FROM ingest_runs WHERE status = 'complete'"))}
        files = _log_files(inbox)
        new = [f for f in files if file_sha256(f) not in done]
        runs = ingest_paths(store, new, settings, progress=False) if new else []
    finally:
        store.dispose()
    firsts = [r.first_arrival_us for r in runs if r.first_arrival_us is not None]
    lasts = [r.last_arrival_us for r in runs if r.last_arrival_us is not None]
    out = {
        "inbox": str(inbox),
        "files_seen": len(files),
        "files_ingested": [r.source for r in runs],
        "rows_read": sum(r.rows_read for r in runs),
        "rows_inserted": sum(r.rows_inserted for r in runs),
        "rows_quarantined": sum(r.rows_quarantined for r in runs),
        "first_arrival_us": min(firsts) if firsts else None,
        "last_arrival_us": max(lasts) if lasts else None,
    }
    log.info("ingested %d new of %d files in %s: %d rows read, %d new, %d quarantined",
             len(runs), len(files), inbox, out["rows_read"], out["rows_inserted"], out["rows_quarantined"])
    return out


def refresh_windows(settings: Settings, first_us: int | None = None, last_us: int | None = None) -> dict[str, Any]:
    """Recompute window loads for [first_us, last_us] (nothing when either is None) and summarise
    the newest stored window: its start (s), total arrivals and arrivals per class.

    This is the hand-off the forecaster reads (the DAGs publish it as the ``window_loads`` Asset)."""
    store = _open(settings)
    try:
        written = 0
        if first_us is not None and last_us is not None:
            written = refresh_window_loads(store, settings, first_us, last_us)
        w = settings.window_s
        with store.engine.connect() as conn:
            latest = conn.execute(text("SELECT MAX(window_start_s) FROM window_loads WHERE window_s = :w"),
                                  dict(w=w)).scalar()
            n_windows = conn.execute(text("SELECT COUNT(DISTINCT window_start_s) FROM window_loads WHERE window_s = :w"),
                                     dict(w=w)).scalar()
            per_class: dict[str, int] = {}
            if latest is not None:
                rows = conn.execute(text("SELECT class_name, SUM(arrivals) FROM window_loads "
                                         "WHERE window_s = :w AND window_start_s = :t GROUP BY class_name"),
                                    dict(w=w, t=latest)).all()
                per_class = {c: int(n) for c, n in rows}
    finally:
        store.dispose()
    out = {
        "window_s": w,
        "rows_written": int(written),
        "windows_stored": int(n_windows or 0),
        "latest_window_start_s": None if latest is None else int(latest),
        "latest_arrivals": sum(per_class.values()),
        "latest_arrivals_per_class": per_class,
    }
    log.info("window loads: %d rows rewritten; newest window %s with %d arrivals",
             out["rows_written"], out["latest_window_start_s"], out["latest_arrivals"])
    return out


def write_reports(settings: Settings, out_dir: str | Path, since_s: int | None = None, until_s: int | None = None,
                  names: list[str] | None = None, formats: tuple[str, ...] = ("csv", "png")) -> dict[str, Any]:
    """Run the SQL reports (all of ``sql/*.sql`` unless ``names``) for [since_s, until_s) and write
    each in ``formats`` under ``out_dir``. Returns the paths written and row counts per report."""
    from dynamo_pipeline.reports import available, render, run_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = _open(settings)
    written: dict[str, list[str]] = {}
    rows: dict[str, int] = {}
    try:
        for name in names or available():
            df = run_report(store, name, since_s, until_s)
            rows[name] = len(df)
            written[name] = [str(render(df, name, fmt, out_dir / f"{name}.{fmt}")) for fmt in formats]
    finally:
        store.dispose()
    log.info("wrote %d reports to %s", len(written), out_dir)
    return {"out_dir": str(out_dir), "files": written, "rows": rows}


def check_overrun(started_at: datetime, window_s: float, now: datetime | None = None) -> dict[str, Any]:
    """Report whether a run that started at ``started_at`` has taken longer than its window.

    A 5-minute plan that overruns is reported here (a warning in the task log and ``overran`` in the
    result), never stacked: the DAG's ``max_active_runs=1`` keeps the next run waiting."""
    now = now or datetime.now(timezone.utc)
    if started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=timezone.utc)
    elapsed_s = (now - started_at).total_seconds()
    overran = elapsed_s > window_s
    if overran:
        log.warning("run overran its window: %.1f s elapsed > %.0f s window; the next run was held back, "
                    "not stacked. Look at the slowest task's log.", elapsed_s, window_s)
    else:
        log.info("run within its window: %.1f s of %.0f s", elapsed_s, window_s)
    return {"overran": overran, "elapsed_s": round(elapsed_s, 3), "window_s": window_s}
