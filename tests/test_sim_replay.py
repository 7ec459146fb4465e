"""Trace scaling and prediction, replay accounting, the evaluation table, the store and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.planning.testing import synthetic_profile
from dynamo_pipeline.sim.evaluate import evaluate, format_table, scale_for_servers, write_plots
from dynamo_pipeline.sim.replay import simulate
from dynamo_pipeline.sim.results import runs_frame, windows_frame
from dynamo_pipeline.sim.trace import predict_classes, read_trace_file, scale_trace

from tests.conftest import SAMPLES


@pytest.fixture(scope="module")
def conv():
    """The first 15 minutes of the Azure chat hour."""
    df = read_trace_file(SAMPLES / "AzureLLMInferenceTrace_conv.csv.gz", load_settings(None))
    out = df[df["t_s"] < 900].reset_index(drop=True)
    out.attrs.update(df.attrs)
    return out


@pytest.fixture(scope="module")
def profile():
    return synthetic_profile()


def test_superpose_keeps_the_span_and_multiplies_the_rate(conv):
    out = scale_trace(conv, 2.5, "superpose", seed=3)
    assert len(out) == pytest.approx(2.5 * len(conv), rel=0.03)
    assert out["t_s"].max() <= conv["t_s"].max() + 1e-6
    assert np.all(np.diff(out["t_s"].to_numpy()) >= 0)
    assert out.attrs["scale_factor"] == 2.5


def test_compress_shortens_the_trace(conv):
    out = scale_trace(conv, 4, "compress")
    assert len(out) == len(conv)
    assert out["t_s"].max() == pytest.approx(conv["t_s"].max() / 4)


def test_error_rate_mispredicts_only_the_output_bin(conv):
    s = load_settings(None)
    out = predict_classes(conv, s, error_rate=0.3, seed=1)
    wrong = out["pred_cls"] != out["cls"]
    assert wrong.mean() == pytest.approx(0.3, abs=0.03)
    assert (out["pred_cls"] // 3 == out["cls"] // 3).all()  # the input bin is known at arrival
    assert ((out["pred_cls"] % 3 - out["cls"] % 3).abs() <= 1).all()


def test_scaling_reaches_the_target_servers_for_singlepool(conv, profile):
    s = load_settings(None)
    scaled, factor = scale_for_servers(conv, s, profile, target_servers=6)
    r = simulate(predict_classes(scaled, s), "singlepool", s, profile)
    assert factor > 1
    assert r.summary["peak_servers_on"] == 6


def test_energy_accounting_adds_up(conv, profile):
    s = load_settings(None)
    tr = predict_classes(scale_trace(conv, 3), s)
    r = simulate(tr, "singlepool", s, profile)
    w = r.windows
    non_gpu_j = s.hardware.server_non_gpu_power_w * w["servers_on"] * 300.0
    assert (w["server_energy_j"] - w["gpu_energy_j"]).to_numpy() == pytest.approx(non_gpu_j.to_numpy())
    # GPU power of a window lies between all GPUs idle and all GPUs at TDP
    assert (w["gpu_power_w"] >= 75.0 * w["gpus_on"] - 1e-6).all()
    assert (w["gpu_power_w"] <= 700.0 * w["gpus_on"]).all()
    assert r.summary["requests"] == len(tr) == w["requests"].sum()


def test_p99_slo_met_reads_the_slos_as_p99_targets_per_class_and_window():
    from dynamo_pipeline.sim.replay import p99_slo_met

    n = 200
    # class 0: 200 requests in window 0, 3 of them (1.5%) over the TTFT SLO: its P99 misses;
    # class 1: 100 in window 0 all fine, 100 in window 1 with one dropped (1%: P99 still met)
    ttft = np.full(2 * n, 0.1)
    ttft[:3] = 5.0
    ttft[2 * n - 1] = np.nan
    req = pd.DataFrame({"t_s": np.r_[np.full(n, 10.0), np.full(n // 2, 20.0), np.full(n // 2, 310.0)],
                        "cls": np.r_[np.zeros(n, int), np.ones(n, int)], "ttft_s": ttft,
                        "tbt_s": np.where(np.isnan(ttft), np.nan, 0.01)})
    def met(req):
        ok_ttft = req["ttft_s"].fillna(np.inf).to_numpy() <= 1.0     # SLOs: 1 s TTFT, 100 ms TBT
        ok_tbt = req["tbt_s"].fillna(np.inf).to_numpy() <= 0.1
        return p99_slo_met(req["cls"].to_numpy(), req["t_s"].to_numpy(), ok_ttft, ok_tbt, 300.0)

    out = met(req)
    assert out["p99_classes"] == 2 and out["p99_classes_met"] == 1
    # cells: (0, class 0) misses with 200 requests; (0, class 1) and (1, class 1) meet with 100 each
    assert out["p99_cells_met"] == pytest.approx(200 / 400)
    # two more drops in window 1 of class 1 (3 of its 100, 3 of its 200) break that cell and the class
    req.loc[[2 * n - 2, 2 * n - 3], ["ttft_s", "tbt_s"]] = np.nan
    out = met(req)
    assert out["p99_classes_met"] == 0 and out["p99_cells_met"] == pytest.approx(100 / 400)


def test_mispredictions_cost_moves_and_energy_under_dynamollm(conv, profile):
    s = load_settings(None)
    tr = scale_trace(conv, 3)
    exact = simulate(predict_classes(tr, s, 0.0), "dynamollm", s, profile).summary
    noisy = simulate(predict_classes(tr, s, 0.4, seed=2), "dynamollm", s, profile).summary
    assert noisy["reordered"] > exact["reordered"]
    assert noisy["moved"] + noisy["clock_raises"] > exact["moved"] + exact["clock_raises"]


def test_hierarchical_policies_only_add_servers_between_cluster_intervals(conv, profile):
    from dynamo_pipeline.sim.policies import POLICIES, PolicyContext
    from dynamo_pipeline.sim.profile_view import ProfileTable, class_slos
    from dynamo_pipeline.sim.replay import last_value_upper, peak_tick_loads

    s = load_settings(None)
    s = s.model_copy(update={"planner": s.planner.model_copy(update={"cluster_interval_s": 600, "early_scale_in": False})})
    tr = predict_classes(scale_trace(conv, 3, seed=1), s)
    classes = s.classes.names()
    loads = peak_tick_loads(tr, classes, "cls", 300.0, 60.0, 3)
    ctx = PolicyContext(settings=s, profile=profile, table=ProfileTable(profile, class_slos(s, profile)),
                        classes=classes, true_loads=loads, observed_loads=loads, forecaster=last_value_upper())
    for name in ("dynamollm", "oracle"):
        plans = POLICIES[name](ctx)
        servers = [p.total_servers() for p in plans]
        assert servers[1] >= servers[0]                   # window 1 is inside the first 10-minute interval
        for p in plans:                                   # instance ids are unique within a window
            ids = [i.instance_id for i in p.instances]
            assert len(ids) == len(set(ids)) and ids
            for pool in p.pools:                          # instances fit on their pool's servers
                assert sum(i.tp for i in p.instances if i.pool == pool) <= p.servers(pool) * p.gpus_per_server


def test_early_scale_in_stops_servers_the_newest_load_does_not_need(profile):
    """A load that falls inside one 30-minute cluster interval: with ``early_scale_in`` both
    forecasting and oracle policies stop servers before the boundary, the oracle as soon as the
    start-up time ahead is quiet and dynamollm once a window has been measured quiet; without it
    the servers stay to the boundary."""
    from dynamo_pipeline.sim.policies import POLICIES, PolicyContext
    from dynamo_pipeline.sim.profile_view import ProfileTable, class_slos
    from dynamo_pipeline.sim.replay import last_value_upper

    base = load_settings(None)
    classes = base.classes.names()
    high = {c: 0.0 for c in classes} | {"MS": 40.0, "SM": 80.0}
    low = {c: 0.0 for c in classes} | {"MS": 4.0, "SM": 8.0}
    loads = pd.DataFrame([high, high, low, low, low, low], columns=classes)

    def servers(policy: str, early: bool) -> list[int]:
        s = base.model_copy(update={"planner": base.planner.model_copy(update={"early_scale_in": early})})
        ctx = PolicyContext(settings=s, profile=profile, table=ProfileTable(profile, class_slos(s, profile)),
                            classes=classes, true_loads=loads, observed_loads=loads, forecaster=last_value_upper())
        return [p.total_servers() for p in POLICIES[policy](ctx)]

    for policy in ("dynamollm", "oracle"):
        kept = servers(policy, early=False)
        assert kept == sorted(kept) and kept[-1] >= kept[0] > 0      # one interval: never fewer servers
    oracle = servers("oracle", early=True)
    assert oracle[2] < oracle[1] and oracle[2] == min(oracle)         # quiet from window 2 on: stops at once
    dyn = servers("dynamollm", early=True)
    # window 2 is the first measured quiet: servers stop from window 3 on
    assert dyn[3] < dyn[2] and max(dyn[3:]) <= dyn[3] < dyn[0]


def test_evaluate_stores_every_policy_and_draws_plots(store, settings, conv, profile, tmp_path):
    tr = predict_classes(scale_trace(conv, 2), settings)
    ev = evaluate(tr, settings, profile, store=store, label="t")
    assert list(ev.table["policy"]) == ["singlepool", "multipool", "scaleinst", "scaleshard", "scalefreq",
                                        "dynamollm", "oracle"]
    assert ev.table.loc[0, "gpu_energy_vs_single"] == 0.0
    text = format_table(ev.table)
    assert "dynamollm" in text and "server kWh" in text
    runs = runs_frame(store, "t")
    assert len(runs) == 7
    w = windows_frame(store, int(ev.run_ids["dynamollm"]))
    assert len(w) == 3 and w["gpu_energy_j"].sum() / 3.6e6 == pytest.approx(ev.table.set_index("policy").loc["dynamollm", "gpu_energy_kwh"])
    paths = write_plots(ev, tmp_path / "plots")
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)


def test_cli_simulate_and_evaluate(tmp_path, profile):
    from dynamo_pipeline.cli import main

    prof = tmp_path / "p.csv"
    profile.to_csv(prof, index=False)
    trace = tmp_path / "t.csv"
    df = read_trace_file(SAMPLES / "AzureLLMInferenceTrace_code.csv.gz", load_settings(None))
    pd.DataFrame({"t_s": df["t_s"], "input_tokens": df["input_tokens"], "output_tokens": df["output_tokens"]}
                 )[df["t_s"] < 600].to_csv(trace, index=False)
    db = f"sqlite:///{tmp_path / 'd.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["--db", db, "db", "upgrade"]).exit_code == 0
    res = runner.invoke(main, ["--db", db, "simulate", "--trace", str(trace), "--policy", "scalefreq",
                               "--profile", str(prof), "--scale", "2"])
    assert res.exit_code == 0, res.output
    assert "GPU" in res.output and "dropped" in res.output
    res = runner.invoke(main, ["--db", db, "evaluate", "--trace", str(trace), "--servers", "3", "--profile", str(prof),
                               "--policies", "singlepool,dynamollm", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "singlepool" in res.output and (tmp_path / "o" / "energy_bars.png").exists()
    res = runner.invoke(main, ["--db", db, "simulate", "--trace", str(trace), "--policy", "nope", "--profile", str(prof)])
    assert res.exit_code != 0
