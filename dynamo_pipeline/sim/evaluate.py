"""The paper's table (DESIGN §7): every policy replayed on one trace, side by side, with plots.

:func:`scale_for_servers` raises a light trace's arrival rate until ``singlepool`` needs a target
number of TP8 servers at its busiest tick (the paper's setting: 12), by superposing shifted copies
(default) or compressing time, and reports the factor. :func:`evaluate` replays all policies
(``oracle`` with true lengths), stores every run under one label, and returns the table: GPU energy
and whole-server energy with their change against ``singlepool``, servers on, P50/P99 TTFT and
TBT, SLO attainment, fast-path counters, GPU-hours, cost and carbon, next to the paper's energy
figures. :func:`write_plots` draws power over time per policy, energy bars and latency CDFs (PNG).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from dynamo_pipeline.config import Settings
from dynamo_pipeline.sim.cluster import ClusterParams
from dynamo_pipeline.sim.policies import POLICIES, Forecaster, peak_utilisation
from dynamo_pipeline.sim.profile_view import ProfileTable, class_slos
from dynamo_pipeline.sim.replay import SimResult, peak_tick_loads, simulate
from dynamo_pipeline.sim.trace import scale_trace

#: Order of the table's rows (the paper's).
POLICY_ORDER = ("singlepool", "multipool", "scaleinst", "scaleshard", "scalefreq", "dynamollm", "oracle")
#: Energy vs singlepool on the 1-hour chat trace with 12 servers (DynamoLLM, HPCA 2025; DESIGN §7).
PAPER_ENERGY_VS_SINGLEPOOL = {"singlepool": 0.0, "multipool": +0.20, "scaleinst": -0.02, "scaleshard": -0.06,
                              "scalefreq": -0.19, "dynamollm": -0.35}


@dataclass
class Evaluation:
    table: pd.DataFrame
    results: dict[str, SimResult]
    scale_factor: float
    scale_method: str
    run_ids: dict[str, int]


def scale_for_servers(trace: pd.DataFrame, settings: Settings, profile: pd.DataFrame, target_servers: int = 12,
                      method: str = "superpose", fill: float = 0.95, tick_s: float = 60.0, seed: int = 0,
                      iterations: int = 4) -> tuple[pd.DataFrame, float]:
    """The trace scaled so that singlepool (TP8, top clock) needs ``target_servers`` instances at
    its busiest tick, aiming at a peak utilisation of ``fill`` × target; returns (trace, factor)."""
    classes = settings.classes.names()
    table = ProfileTable(profile, class_slos(settings, profile), settings.planner.gpu_idle_w)
    tp = max(settings.hardware.tp_degrees)
    window_s = float(settings.window_s)

    def util(df: pd.DataFrame) -> float:
        n_w = max(1, int(np.ceil((df["t_s"].max() + 1e-9) / window_s)))
        return peak_utilisation(peak_tick_loads(df, classes, "cls", window_s, tick_s, n_w), table, classes, tp)

    goal = target_servers * fill
    factor = goal / util(trace)
    scaled = scale_trace(trace, factor, method, seed=seed)
    for _ in range(iterations):
        u = util(scaled)
        if target_servers - 1 < u <= target_servers:
            break
        factor *= goal / u
        scaled = scale_trace(trace, factor, method, seed=seed)
    return scaled, factor


def evaluate(trace: pd.DataFrame, settings: Settings, profile: pd.DataFrame, policies: Sequence[str] = POLICY_ORDER,
             mode: str = "fast", params: ClusterParams | None = None, forecaster: Forecaster | None = None,
             store=None, label: str = "evaluate", progress: bool = False) -> Evaluation:
    """Replay every policy on ``trace`` and build the table (see the module docstring)."""
    from dynamo_pipeline.sim.results import save_result

    results: dict[str, SimResult] = {}
    run_ids: dict[str, int] = {}
    for name in tqdm(list(policies), desc="policies", disable=not progress):
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; choose from {sorted(POLICIES)}")
        r = simulate(trace, name, settings, profile, mode=mode, params=params, forecaster=forecaster)
        results[name] = r
        if store is not None:
            run_ids[name] = save_result(store, r, label)
    return Evaluation(table_frame(results), results, float(trace.attrs.get("scale_factor", 1.0)),
                      str(trace.attrs.get("scale_method", "none")), run_ids)


def table_frame(results: dict[str, SimResult]) -> pd.DataFrame:
    """One row per policy; energy changes are against singlepool when it was replayed."""
    base = results.get("singlepool")
    rows = []
    for name, r in results.items():
        s = r.summary
        row = dict(policy=name, gpu_energy_kwh=s["gpu_energy_kwh"], server_energy_kwh=s["server_energy_kwh"])
        if base is not None:
            row["gpu_energy_vs_single"] = s["gpu_energy_kwh"] / base.summary["gpu_energy_kwh"] - 1
            row["server_energy_vs_single"] = s["server_energy_kwh"] / base.summary["server_energy_kwh"] - 1
        row["paper_energy_vs_single"] = PAPER_ENERGY_VS_SINGLEPOOL.get(name, np.nan)
        row.update(mean_servers_on=s["mean_servers_on"], peak_servers_on=s["peak_servers_on"],
                   ttft_p50_s=s["ttft_p50_s"], ttft_p99_s=s["ttft_p99_s"], tbt_p50_s=s["tbt_p50_s"],
                   tbt_p99_s=s["tbt_p99_s"], ttft_attainment=s["ttft_attainment"], tbt_attainment=s["tbt_attainment"],
                   slo_attainment=s["slo_attainment"], p99_classes_met=s["p99_classes_met"],
                   p99_classes=s["p99_classes"], p99_cells_met=s["p99_cells_met"], dropped=s["dropped"], moved=s["moved"],
                   clock_raises=s["clock_raises"], reordered=s["reordered"], gpu_hours=s["gpu_hours"],
                   cost_usd=s["cost_usd"], carbon_kg=s["carbon_kg"])
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame) -> str:
    """The table as text: energies in kWh with the change vs singlepool, latency in ms, SLOs in %.
    ``TTFT ok`` / ``TBT ok``: requests within the SLO; ``P99 ok``: classes whose P99 TTFT and TBT
    over the run are within their SLOs; ``P99 ok/w``: the same per (5-minute window, class), as a
    share of requests."""
    def pct(v: float) -> str:
        return "" if pd.isna(v) else f"{v:+.1%}"
    lines = []
    head = (f"{'policy':<11} {'GPU kWh':>8} {'vs single':>9} {'paper':>6} {'server kWh':>10} {'vs single':>9} "
            f"{'servers':>7} {'TTFT p50/p99 ms':>16} {'TBT p50/p99 ms':>15} {'TTFT ok':>7} {'TBT ok':>7} {'P99 ok':>6} {'P99 ok/w':>8} "
            f"{'dropped':>7} {'moved':>6} {'GPU-h':>6} {'USD':>7} {'kgCO2':>6}")
    lines.append(head)
    lines.append("-" * len(head))
    for _, r in table.iterrows():
        lines.append(
            f"{r.policy:<11} {r.gpu_energy_kwh:8.2f} {pct(r.get('gpu_energy_vs_single')):>9} "
            f"{pct(r.paper_energy_vs_single):>6} {r.server_energy_kwh:10.2f} {pct(r.get('server_energy_vs_single')):>9} "
            f"{r.mean_servers_on:7.1f} {r.ttft_p50_s * 1e3:7.0f}/{r.ttft_p99_s * 1e3:<8.0f} "
            f"{r.tbt_p50_s * 1e3:6.1f}/{r.tbt_p99_s * 1e3:<8.1f} {r.ttft_attainment:7.2%} {r.tbt_attainment:7.2%} "
            f"{f'{int(r.p99_classes_met)}/{int(r.p99_classes)}':>6} {r.p99_cells_met:8.2%} "
            f"{int(r.dropped):7d} {int(r.moved):6d} {r.gpu_hours:6.1f} {r.cost_usd:7.2f} {r.carbon_kg:6.2f}")
    return "\n".join(lines)


def write_plots(ev: Evaluation, out_dir: str | Path) -> list[Path]:
    """power_over_time.png, energy_bars.png, latency_cdfs.png in ``out_dir``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharex=True)
    for name, r in ev.results.items():
        w = r.windows
        x = w["window_start_s"] / 60
        axes[0].step(x, w["gpu_power_w"] / 1e3, where="post", label=name)
        axes[1].step(x, w["server_power_w"] / 1e3, where="post", label=name)
    axes[0].set(title="GPU power", xlabel="minutes", ylabel="kW")
    axes[1].set(title="whole-server power (GPU + non-GPU)", xlabel="minutes", ylabel="kW")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "power_over_time.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    t = ev.table
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(t))
    ax.bar(x - 0.2, t["gpu_energy_kwh"], 0.4, label="GPU")
    ax.bar(x + 0.2, t["server_energy_kwh"], 0.4, label="whole server")
    ax.set_xticks(x, t["policy"], rotation=20)
    ax.set(ylabel="kWh", title=f"energy per policy (trace ×{ev.scale_factor:.2f}, {ev.scale_method})")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "energy_bars.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for name, r in ev.results.items():
        for ax, col in zip(axes, ("ttft_s", "tbt_s")):
            v = np.sort(r.requests[col].dropna().to_numpy())
            if v.size:
                ax.plot(v * 1e3, np.arange(1, v.size + 1) / v.size, label=name)
    axes[0].set(title="TTFT CDF", xlabel="ms", ylabel="share of requests", xscale="log")
    axes[1].set(title="TBT CDF", xlabel="ms", xscale="log")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "latency_cdfs.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
