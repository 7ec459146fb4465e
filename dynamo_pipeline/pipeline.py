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

import pandas as pd
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
                # every configured class: one with no arrivals in the newest window was observed at 0
                per_class = {c: 0 for c in settings.classes.names()} | {c: int(n) for c, n in rows}
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


# ---- forecast, plan, publish, acknowledgement (the planning half of the DAGs) ----------------------

def planning_settings(settings: Settings, cfg: dict[str, Any]) -> Settings:
    """``settings`` with a run's objective weights and SLOs (the output of :func:`run_config`)
    applied: energy → ``planner.weight_energy``, carbon → ``weight_carbon``, cost → ``weight_gpu_cost``."""
    w = cfg.get("objective_weights") or {}
    planner = settings.planner.model_dump()
    planner.update({k: float(w[n]) for n, k in (("energy", "weight_energy"), ("carbon", "weight_carbon"),
                                               ("cost", "weight_gpu_cost")) if n in w})
    slo = settings.slo.model_dump()
    slo.update(cfg.get("slo") or {})
    return settings.model_copy(update={"planner": type(settings.planner).model_validate(planner),
                                       "slo": type(settings.slo).model_validate(slo)})


def forecast_step(settings: Settings, horizon: str = "intraday") -> dict[str, Any]:
    """Forecast ``horizon`` from the store's window loads and save the run.

    Returns the run id, the first window's ``upper_rps`` per class (what the 5-minute plan
    provisions for) and, per cluster-plan window (``planner.cluster_interval_s``), the peak
    ``upper_rps`` per class (what the nightly plan reads). With no window loads it returns
    ``run_id: None`` and the reason, and the planner falls back to observed or constant load."""
    from dynamo_pipeline.forecast import ForecastError
    from dynamo_pipeline.forecast.persist import forecast_store

    store = _open(settings)
    try:
        fc, run_id = forecast_store(store, settings, horizon=horizon)
    except ForecastError as e:
        log.warning("no %s forecast: %s; the plan uses observed or constant load", horizon, e)
        return {"horizon": horizon, "run_id": None, "reason": str(e), "upper_rps": {}, "peaks_rps": []}
    finally:
        store.dispose()
    first = fc[fc.window_start_s == fc.window_start_s.min()]
    cw = int(settings.planner.cluster_interval_s)
    fc = fc.assign(slot=(fc.window_start_s - fc.window_start_s.min()) // cw)
    peaks = fc.pivot_table(index="slot", columns="class_name", values="upper_rps", aggfunc="max").fillna(0.0)
    out = {
        "horizon": horizon, "run_id": run_id, "origin_s": int(fc.window_start_s.min()),
        "windows": int(fc.window_start_s.nunique()),
        "upper_rps": first.groupby("class_name").upper_rps.sum().round(6).to_dict(),
        "peaks_rps": [{c: round(float(v), 6) for c, v in row.items()} for _i, row in peaks.iterrows()],
        "fallback": sorted({f for f in fc.get("fallback", pd.Series(dtype=str)) if f}),
    }
    log.info("%s forecast run %s from %s: %d windows, first-window upper rps %s",
             horizon, run_id, out["origin_s"], out["windows"], out["upper_rps"])
    return out


def _profile(settings: Settings) -> pd.DataFrame:
    from dynamo_pipeline.profiling.lookup import load_profile

    return load_profile(settings.hardware.gpu, settings.hardware.model)


def plan_step(settings: Settings, cfg: dict[str, Any], forecast_rps: dict[str, float] | None = None,
              observed_rps: dict[str, float] | None = None, constant_rps: float | None = None,
              servers: int = 40, at_s: int | None = None) -> dict[str, Any]:
    """Plan one 5-minute pool window with the run's weights and SLOs (``cfg`` from :func:`run_config`)
    on the configured GPU × model profile and save it. Loads come from :func:`resolve_loads`: the
    forecast's ``upper_rps``, else the observed rate, else ``constant_rps``."""
    from dynamo_pipeline.planning import plan_pool, pool_problem, resolve_loads
    from dynamo_pipeline.planning.records import carbon_at, save_plan

    s = planning_settings(settings, cfg)
    profiles = _profile(s)
    classes = sorted(set(profiles["class_name"]))
    loads, source = resolve_loads(classes, forecast=forecast_rps or None, observed=observed_rps or None,
                                  constant_rps=constant_rps)
    start = int(at_s if at_s is not None else datetime.now(timezone.utc).timestamp())
    store = _open(s)
    try:
        carbon = carbon_at(store, datetime.fromtimestamp(start, timezone.utc), s.carbon.default_g_per_kwh)
        pl = s.planner
        prob = pool_problem(profiles, loads, s, servers * s.hardware.gpus_per_server, pools={"all": classes},
                            carbon_g_per_kwh=carbon)
        plan = plan_pool(prob, pl.solver, pl.time_limit_s, pl.mip_rel_gap)
        plan.flags.append(f"loads from: {source}")
        pid = save_plan(store, plan, "pool", start, start + pl.pool_interval_s, source, {"all": servers})
    finally:
        store.dispose()
    out = {"plan_id": pid, "load_source": source, "loads_rps": {c: round(v, 6) for c, v in loads.items()},
           "objective_weights": cfg.get("objective_weights"), "slo": cfg.get("slo"), **plan.summary()}
    log.info("pool plan %d (%s loads): %s", pid, source, plan.summary())
    return out


def nightly_plan_step(settings: Settings, cfg: dict[str, Any], peaks_rps: list[dict[str, float]],
                      servers: int = 40, windows: int = 48, start_s: int | None = None) -> dict[str, Any]:
    """Tomorrow's ``windows`` half-hour cluster plans (:func:`nightly_plan`) from the day-ahead
    forecast's peaks, each saved; windows past the forecast repeat its last peak."""
    from dynamo_pipeline.planning import nightly_plan
    from dynamo_pipeline.planning.problem import PlanningError
    from dynamo_pipeline.planning.records import save_plan

    if not peaks_rps:
        raise PlanningError("no day-ahead forecast to plan from: ingest request logs and run the forecast step first")
    s = planning_settings(settings, cfg)
    profiles = _profile(s)
    loads = [peaks_rps[min(i, len(peaks_rps) - 1)] for i in range(windows)]
    plans = nightly_plan(profiles, loads, s, servers)
    cw = int(s.planner.cluster_interval_s)
    start = int(start_s if start_s is not None else (datetime.now(timezone.utc).timestamp() // 86_400 + 1) * 86_400)
    store = _open(s)
    try:
        ids = [save_plan(store, cp.pool_plan, "cluster", start + i * cw, start + (i + 1) * cw, "forecast",
                         cp.servers_by_pool) for i, cp in enumerate(plans)]
    finally:
        store.dispose()
    energy_j = sum(cp.total_energy_j for cp in plans)
    out = {"plan_ids": ids, "first_plan_id": ids[0], "windows": len(ids), "start_s": start,
           "total_energy_j": round(energy_j, 1), "max_servers_used": max(sum(cp.servers_by_pool.values()) for cp in plans)}
    log.info("nightly plan: %d windows from %s, %.3g J", len(ids), start, energy_j)
    return out


def publish_step(settings: Settings, plan_ids: list[int] | int | None = None, directory: str | Path | None = None,
                 key: bytes | None = None) -> dict[str, Any]:
    """Build the schedule of the stored plans (one validity window each, newest plan when none),
    sign it (``key``; None: ``DYNAMO_SCHEDULE_KEY``) and publish it as the next version to the store
    and ``directory`` (default ``$DYNAMO_HOME/schedules``)."""
    from dynamo_pipeline.planning.records import read_plan
    from dynamo_pipeline.schedules.build import build_schedule_from_groups
    from dynamo_pipeline.schedules.schema import sign
    from dynamo_pipeline.schedules.store import file_name, next_version, publish

    ids = [plan_ids] if isinstance(plan_ids, int) or plan_ids is None else list(plan_ids)
    store = _open(settings)
    try:
        plans = [read_plan(store, i) for i in ids]
        profiles = _profile(settings)
        version = next_version(store)
        first = plans[0]
        windows = [(datetime.fromtimestamp(p.window_start_s, timezone.utc),
                    datetime.fromtimestamp(p.window_end_s, timezone.utc)) for p in plans]
        sch = build_schedule_from_groups(first.groups, first.flags, profiles, settings, version, windows,
                                         servers_by_pool=first.servers_by_pool, plan_id=first.id)
        out_dir = Path(directory or Path(settings.home) / "schedules")
        publish(sign(sch, key), store=store, directory=out_dir)
    finally:
        store.dispose()
    log.info("published schedule version %d (plans %s) to the store and %s", version, ids, out_dir)
    return {"version": version, "plan_ids": [p.id for p in plans], "path": str(out_dir / file_name(version)),
            "valid_from_s": plans[0].window_start_s, "valid_until_s": plans[-1].window_end_s}


def check_acks(settings: Settings, version: int, nodes: list[str] | None, timeout_s: float = 60.0) -> dict[str, Any]:
    """Wait up to ``timeout_s`` for the node agents ``nodes`` to acknowledge ``version``. With no
    nodes configured it reports that there is nothing to wait for; a missing or rejecting node
    raises :class:`RuntimeError` naming it (the task fails and retries)."""
    from dynamo_pipeline.agent import agents_acknowledged

    nodes = list(nodes or [])
    if not nodes:
        log.info("no agents to wait for: set the `nodes` param (or the dynamo_nodes Variable) to check acks")
        return {"version": version, "nodes": [], "ok": True, "message": "no agents to wait for"}
    store = _open(settings)
    try:
        r = agents_acknowledged(store, version, nodes, timeout_s)
    finally:
        store.dispose()
    out = {"version": version, "nodes": nodes, "ok": r.ok, "applied": sorted(r.applied), "rejected": r.rejected,
           "missing": sorted(r.missing), "waited_s": round(r.waited_s, 3)}
    if not r.ok:
        raise RuntimeError(f"schedule version {version}: nodes {sorted(r.missing)} did not acknowledge within "
                           f"{timeout_s:.0f} s, rejected: {r.rejected}; look at those agents' logs (`dynamo agent`)")
    return out


# ---- nightly: length predictor and profiles ------------------------------------------------------------

def train_lengths_step(settings: Settings, min_rows: int = 1000) -> dict[str, Any]:
    """Train the output-length predictor on the store's requests, save and register it; skipped
    (with the reason logged and returned) when there are fewer than ``min_rows`` requests."""
    from dynamo_pipeline.lengths import LengthsError, register_predictor, train
    from dynamo_pipeline.lengths.data import load_store_requests

    store = _open(settings)
    try:
        df = load_store_requests(store)
        if len(df) < min_rows:
            reason = f"only {len(df)} requests in the store, fewer than {min_rows}: kept the current predictor"
            log.info("length predictor not trained: %s", reason)
            return {"trained": False, "reason": reason, "rows": len(df)}
        try:
            pred = train(df, settings.classes, settings.lengths, "store")
        except LengthsError as e:
            log.info("length predictor not trained: %s", e)
            return {"trained": False, "reason": str(e), "rows": len(df)}
        path = pred.save(Path(settings.home) / settings.lengths.model_dir)
        register_predictor(store, pred, path)
    finally:
        store.dispose()
    log.info("trained length predictor %s on %d requests: %s", pred.version, len(df), path)
    return {"trained": True, "version": pred.version, "rows": len(df), "path": str(path)}


def profile_stale(settings: Settings, max_age_days: float = 30.0, root: str | Path | None = None) -> dict[str, Any]:
    """Whether the configured GPU × model profile is missing or older than ``max_age_days``."""
    root = Path(root) if root else Path(__file__).resolve().parent.parent / "profiles"
    p = root / settings.hardware.gpu / f"{settings.hardware.model}.csv"
    if not p.exists():
        return {"stale": True, "path": str(p), "reason": "missing"}
    age_days = (datetime.now(timezone.utc).timestamp() - p.stat().st_mtime) / 86_400
    stale = age_days > max_age_days
    return {"stale": stale, "path": str(p), "age_days": round(age_days, 2),
            "reason": f"{age_days:.1f} days old, limit {max_age_days:g}" }


def refresh_profile_step(settings: Settings, root: str | Path | None = None, n_requests: int = 200) -> dict[str, Any]:
    """Re-profile the configured model on the simulated backend (``dynamo profile --backend sim``)."""
    from dynamo_pipeline.profiling import SimRunner, run_profile

    hw = settings.hardware
    res = run_profile(SimRunner(hw.model, hw.gpu), settings, hw.gpu, hw.model, root=root, n_requests=n_requests,
                      progress=False, backend_name="sim")
    return {"path": str(res.path), "points": len(res.frame), "measured": res.points_measured, "run_id": res.run_id}
