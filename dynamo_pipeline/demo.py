"""`make demo`: the pipeline end to end on the embedded default (SQLite under ``var/``, the bundled
Azure 2023 samples — CC-BY 4.0, Patel et al., ISCA 2024 — and the shipped H100 × Llama-2-70B profile).

Steps, each the same library function a DAG task or a CLI command calls: migrate the store → ingest
→ per-class window loads → intra-day forecast → pool-level plan → signed schedule published to
``var/schedules`` → the paper's table for every policy on the chat hour at 12 servers
(``dynamo evaluate``) → SQL reports (energy, carbon, cost, SLO; CSV and PNG under ``var/reports``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from dynamo_pipeline import pipeline
from dynamo_pipeline.config import load_settings
from dynamo_pipeline.ingest import ingest_paths, window_loads
from dynamo_pipeline.ingest.summary import format_summary, format_windows
from dynamo_pipeline.reports import render, run_report
from dynamo_pipeline.schedules.schema import KEY_ENV
from dynamo_pipeline.store import open_store, upgrade

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "azure_llm_2023"


def main() -> None:
    os.environ.setdefault("DYNAMO_HOME", "var")
    settings = load_settings()
    home = Path(settings.home)
    print(f"store: {settings.database_url}")
    upgrade(settings.database_url)
    store = open_store(settings.database_url)

    print("\n== 1. ingest the bundled Azure LLM inference traces (2023)")
    print(format_summary(ingest_paths(store, [SAMPLES], settings)))

    print("\n== 2. per-class window loads")
    print(format_windows(window_loads(store, settings.window_s), settings.classes.names()))

    print("\n== 3. intra-day forecast (one hour of history: the configured fallback forecaster)")
    fc = pipeline.forecast_step(settings, horizon="intraday")
    print(f"forecast run {fc['run_id']}: first-window upper quantile (req/s) "
          + ", ".join(f"{c} {v:.2f}" for c, v in sorted(fc["upper_rps"].items())) if fc["run_id"] else fc["reason"])

    print("\n== 4. pool-level plan for the next 5 minutes (MILP, HiGHS) on the shipped H100 × Llama-2-70B profile")
    cfg = pipeline.run_config(settings)
    plan = pipeline.plan_step(settings, cfg, forecast_rps=fc["upper_rps"], servers=12)
    print(f"plan {plan['plan_id']}: " + ", ".join(f"{k}={v}" for k, v in plan.items()
                                                  if k in ("load_source", "solver", "status", "gap", "instances", "gpus")))

    print("\n== 5. publish the signed schedule")
    key = os.environ.get(KEY_ENV, "").encode() or None
    if key is None:
        key = secrets.token_hex(32).encode()
        print(f"({KEY_ENV} is not set: signing with a throw-away demo key; set it to the key your agents share)")
    pub = pipeline.publish_step(settings, plan["plan_id"], directory=home / "schedules", key=key)
    print(f"schedule version {pub['version']} → {pub['path']}")

    print("\n== 6. the paper's table: every policy on the chat hour, scaled until singlepool needs 12 servers")
    from dynamo_pipeline.cli import main as dynamo

    dynamo(["--db", settings.database_url, "evaluate", "--trace", "conv", "--servers", "12",
            "--out", str(home / "evaluate")], standalone_mode=False)

    print("\n== 7. reports (SQL over the store; CSV and PNG)")
    rep = pipeline.write_reports(settings, home / "reports")
    energy = run_report(store, "energy_by_policy").sort_values("run_id").groupby("policy").tail(1)[
        ["policy", "gpu_energy_kwh", "server_energy_kwh", "carbon_kg", "cost_usd", "slo_attainment",
         "gpu_energy_vs_singlepool_pct", "server_energy_vs_singlepool_pct"]].round(3)
    print("energy, carbon and cost per policy (report energy_by_policy):")
    print(render(energy, "energy_by_policy", "table"))
    pngs = sorted(str(p) for f in rep["files"].values() for p in f if p.endswith(".png"))
    pngs += sorted(str(p) for p in (home / "evaluate").glob("*.png"))
    print("\nplots written:\n  " + "\n  ".join(pngs))
    store.dispose()


if __name__ == "__main__":
    main()
