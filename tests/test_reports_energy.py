"""Energy, carbon, cost, SLO and agent reports (sql/energy_*.sql, sql/agent_*.sql) on SQLite and
PostgreSQL: each matches the same figures computed with pandas from the raw rows."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert

from dynamo_pipeline.reports import render, run_report
from dynamo_pipeline.store.tables.agent import AgentEvent
from dynamo_pipeline.store.tables.sim import SimRun, SimWindow

DAY0 = 1_700_092_800  # 2023-11-16T00:00Z
POLICIES = ("singlepool", "multipool", "dynamollm")


@pytest.fixture
def sim_rows(store):
    """Two evaluations (labels), three policies each, 40 half-hour windows over two days."""
    rng = np.random.default_rng(7)
    runs, windows = [], []
    rid = 0
    for label in ("eval-a", "eval-b"):
        for policy in POLICIES:
            rid += 1
            runs.append(dict(id=rid, created_at=datetime.now(timezone.utc), label=label, policy=policy, mode="fast",
                             trace="conv", scale_factor=8.56, scale_method="superpose", error_rate=None,
                             requests=0, windows=40, gpu_energy_kwh=0.0, server_energy_kwh=0.0,
                             ttft_p99_s=None, tbt_p99_s=None, slo_attainment=0.0, summary_json=json.dumps({})))
            for k in range(40):
                req = int(rng.integers(0, 5000))
                windows.append(dict(
                    run_id=rid, window=k, window_start_s=float(DAY0 + 72_000 + 1800 * k), requests=req,
                    dropped=int(rng.integers(0, 5)), moved=0, reordered=0,
                    gpu_energy_j=float(rng.uniform(1e6, 5e7)), server_energy_j=float(rng.uniform(5e7, 2e8)),
                    gpu_power_w=float(rng.uniform(1e3, 4e4)), server_power_w=float(rng.uniform(4e4, 9e4)),
                    servers_on=int(rng.integers(1, 13)), gpus_on=8, gpus_active=8, servers_started=0,
                    servers_drained=0, reshards=0, ttft_p50_s=0.05, ttft_p99_s=0.4, tbt_p50_s=0.02, tbt_p99_s=0.07,
                    ttft_attainment=1.0, tbt_attainment=1.0,
                    slo_attainment=None if req == 0 else float(rng.uniform(0.95, 1.0)),
                    gpu_hours=float(rng.uniform(10, 50)), cost_usd=float(rng.uniform(5, 100)),
                    carbon_g=float(rng.uniform(1e3, 1e5))))
    with store.engine.begin() as c:
        c.execute(insert(SimRun), runs)
        c.execute(insert(SimWindow), windows)
    r = pd.DataFrame(runs)[["id", "label", "policy"]].rename(columns={"id": "run_id"})
    return store, pd.DataFrame(windows).merge(r, on="run_id")


def test_energy_by_policy_matches_pandas_with_savings_against_singlepool(sim_rows):
    store, w = sim_rows
    got = run_report(store, "energy_by_policy").set_index(["label", "policy"])
    g = w.groupby(["label", "policy"])
    exp = pd.DataFrame({
        "gpu_energy_kwh": g.gpu_energy_j.sum() / 3.6e6,
        "server_energy_kwh": g.server_energy_j.sum() / 3.6e6,
        "carbon_kg": g.carbon_g.sum() / 1000,
        "cost_usd": g.cost_usd.sum(),
        "requests": g.requests.sum(),
        "slo_attainment": (w.slo_attainment.fillna(0) * w.requests).groupby([w.label, w.policy]).sum() / g.requests.sum(),
    })
    base = exp.xs("singlepool", level="policy")
    exp["gpu_energy_vs_singlepool_pct"] = [100 * (exp.gpu_energy_kwh[(lb, p)] / base.gpu_energy_kwh[lb] - 1) for lb, p in exp.index]
    assert len(got) == 6
    for col in exp.columns:
        assert np.allclose(got.loc[exp.index, col].astype(float), exp[col].astype(float), rtol=1e-9), col
    assert got.loc[("eval-a", "singlepool"), "gpu_energy_vs_singlepool_pct"] == pytest.approx(0.0, abs=1e-9)


def test_energy_by_day_and_window_respect_the_time_range(sim_rows):
    store, w = sim_rows
    day2 = DAY0 + 86_400
    got = run_report(store, "energy_by_day", since_s=day2, until_s=day2 + 86_400)
    sel = w[(w.window_start_s >= day2) & (w.window_start_s < day2 + 86_400)]
    exp = sel.groupby(["label", "policy"]).server_energy_j.sum() / 3.6e6
    assert set(got.day_start_s) == {day2}
    assert np.allclose(got.set_index(["label", "policy"]).server_energy_kwh.loc[exp.index], exp)
    win = run_report(store, "energy_by_window", since_s=day2, until_s=day2 + 86_400)
    assert len(win) == len(sel) and np.isclose(win.carbon_g.sum(), sel.carbon_g.sum())


def test_energy_report_renders_a_png(sim_rows, tmp_path):
    store, _ = sim_rows
    out = render(run_report(store, "energy_by_policy"), "energy_by_policy", "png", tmp_path / "e.png")
    assert out.stat().st_size > 5_000 and out.read_bytes()[:4] == b"\x89PNG"


def test_agent_overrides_and_energy_match_the_raw_events(store):
    rng = np.random.default_rng(3)
    rows = []
    for k in range(300):
        kind = "override" if k % 3 == 0 else "window"
        rows.append(dict(event_id=f"e{k}", node=f"gpu-{k % 4}", kind=kind,
                         at_us=(DAY0 + int(rng.integers(0, 2 * 86_400))) * 1_000_000,
                         reason=("queue" if k % 2 else "tbt") if kind == "override" else None,
                         duration_s=float(rng.uniform(1, 30)) if kind == "override" else None,
                         window_s=10.0 if kind == "window" else None,
                         energy_j=float(rng.uniform(1e3, 1e5)) if kind == "window" else None))
    with store.engine.begin() as c:
        c.execute(insert(AgentEvent), rows)
    ev = pd.DataFrame(rows)
    got = run_report(store, "agent_overrides").set_index(["node", "reason"])
    o = ev[ev.kind == "override"].groupby(["node", "reason"])
    assert (got.overrides.loc[o.size().index] == o.size()).all()
    assert np.allclose(got.total_s.loc[o.size().index], o.duration_s.sum())
    en = run_report(store, "agent_energy", since_s=DAY0, until_s=DAY0 + 86_400)
    wv = ev[(ev.kind == "window") & (ev.at_us < (DAY0 + 86_400) * 1_000_000)]
    assert np.allclose(en.set_index("node").energy_kwh.sort_index(), wv.groupby("node").energy_j.sum() / 3.6e6)
