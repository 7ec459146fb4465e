"""Replay a trace through the cluster under a policy and score it, window by window.

:func:`simulate` is the one call (``dynamo simulate`` and ``dynamo evaluate`` wrap it): build the
profile view and the per-window loads, let the policy plan every window, run the cluster model
(:mod:`.cluster`), evaluate every instance-tick in the chosen mode — ``fast`` (profile lookups,
:mod:`.fast`) or ``detailed`` (the simulated inference server, :mod:`.detailed`) — and account
energy, latency, SLO attainment, GPU-hours, cost and carbon per window (:class:`SimResult`).

Energy is counted twice (DESIGN §6): GPU energy — instances' GPUs at their power, GPUs of on
servers that no instance uses at idle power, GPUs of servers starting (for ``server_start_s``
before the window they serve) or draining at idle power — and whole-server energy: GPU energy plus
``hardware.server_non_gpu_power_w`` for every second a server is on, starting or draining.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dynamo_pipeline.config import Settings
from dynamo_pipeline.sim.cluster import Assignment, ClusterParams, assign
from dynamo_pipeline.sim.fast import evaluate_fast
from dynamo_pipeline.sim.policies import PERFECT_LENGTHS, Forecaster, PolicyContext, get_policy
from dynamo_pipeline.sim.profile_view import ProfileTable, class_slos, with_class_slos

MODES = ("fast", "detailed")
J_PER_KWH = 3.6e6


@dataclass
class SimResult:
    """One replay: per-window metrics, per-request latencies, the summary and how long it took."""

    policy: str
    mode: str
    windows: pd.DataFrame
    requests: pd.DataFrame
    summary: dict
    assignment: Assignment
    meta: dict = field(default_factory=dict)


def peak_tick_loads(trace: pd.DataFrame, classes: list[str], column: str, window_s: float, tick_s: float,
                    n_windows: int) -> pd.DataFrame:
    """Windows × classes planning loads (rps): each class's mean rate in the window, raised by the
    window's burst ratio (the busiest tick's total rate over the window's mean total rate). The
    burst is measured on the total, so a class's own per-minute noise is not summed nine times."""
    ticks_per_window = max(1, int(round(window_s / tick_s)))
    tick = window_s / ticks_per_window
    idx = np.minimum((trace["t_s"].to_numpy() // tick).astype(np.int64), n_windows * ticks_per_window - 1)
    k = len(classes)
    counts = np.bincount(idx * k + trace[column].to_numpy().astype(np.int64),
                         minlength=n_windows * ticks_per_window * k).reshape(n_windows, ticks_per_window, k)
    mean = counts.sum(axis=1) / window_s
    total = counts.sum(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        burst = np.where(total.sum(axis=1) > 0, total.max(axis=1) / tick / (total.sum(axis=1) / window_s), 1.0)
    return pd.DataFrame(mean * burst[:, None], columns=classes)


def last_value_upper(margin: float = 0.15, lookback: int = 2) -> Forecaster:
    """Reactive forecaster: the largest of the last ``lookback`` windows, plus ``margin``."""
    def f(hist: pd.DataFrame) -> pd.Series:
        return hist.iloc[-lookback:].max() * (1.0 + margin)
    f.__name__ = f"last_value_upper(margin={margin}, lookback={lookback})"
    return f


def simulate(trace: pd.DataFrame, policy: str, settings: Settings, profile: pd.DataFrame, mode: str = "fast",
             params: ClusterParams | None = None, forecaster: Forecaster | None = None,
             detailed_engine: Callable | None = None, max_servers: int = 10_000) -> SimResult:
    """Replay ``trace`` (see :mod:`.trace`) under ``policy`` in ``mode``; see the module docstring."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    params = params or ClusterParams(window_s=float(settings.window_s), server_start_s=settings.hardware.server_start_s,
                                     reshard_s=settings.planner.reshard_s, gpus_per_server=settings.hardware.gpus_per_server)
    classes = settings.classes.names()
    settings = with_class_slos(settings, profile)
    table = ProfileTable(profile, class_slos(settings, profile), gpu_idle_w=settings.planner.gpu_idle_w)
    if policy in PERFECT_LENGTHS:
        trace = trace.assign(pred_cls=trace["cls"])
    n_windows = max(1, math.ceil((float(trace["t_s"].max()) + 1e-9) / params.window_s))
    true_loads = peak_tick_loads(trace, classes, "cls", params.window_s, params.tick_s, n_windows)
    observed = peak_tick_loads(trace, classes, "pred_cls", params.window_s, params.tick_s, n_windows)
    ctx = PolicyContext(settings=settings, profile=profile, table=table, classes=classes, true_loads=true_loads,
                        observed_loads=observed, forecaster=forecaster or last_value_upper(),
                        window_s=params.window_s, max_servers=max_servers)
    t0 = time.perf_counter()
    plans = get_policy(policy)(ctx)
    plan_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    asg = assign(trace, plans, table, classes, params)
    if mode == "fast":
        lat, tick_energy_j = evaluate_fast(trace, asg, table, params)
    else:
        if detailed_engine is None:
            from dynamo_pipeline.sim.detailed import evaluate_detailed as detailed_engine
        lat, tick_energy_j = detailed_engine(trace, asg, table, params, settings)
    replay_s = time.perf_counter() - t1
    windows = window_metrics(trace, asg, lat, tick_energy_j, table, settings, params, n_windows)
    requests = pd.DataFrame({"t_s": trace["t_s"].to_numpy(), "cls": trace["cls"].to_numpy(),
                             "pred_cls": trace["pred_cls"].to_numpy(), "ttft_s": lat["ttft_s"].to_numpy(),
                             "tbt_s": lat["tbt_s"].to_numpy(), "moved": asg.moved, "dropped": asg.row < 0})
    summary = summarise(windows, requests, table, classes, asg, params)
    summary.update(plan_s=plan_s, replay_s=replay_s, requests_per_s=len(trace) / max(replay_s, 1e-9))
    meta = dict(trace.attrs, n_windows=n_windows, tick_s=params.tick_s, window_s=params.window_s,
                forecaster=getattr(ctx.forecaster, "__name__", "custom"),
                flags=sorted({f for p in plans for f in p.flags}))
    return SimResult(policy, mode, windows, requests, summary, asg, meta)


def _slo_arrays(table: ProfileTable, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ttft = np.array([table.slo[c][0] for c in classes])
    tbt = np.array([table.slo[c][1] for c in classes])
    return ttft, tbt


def window_metrics(trace: pd.DataFrame, asg: Assignment, lat: pd.DataFrame, tick_energy_j: np.ndarray,
                   table: ProfileTable, settings: Settings, params: ClusterParams, n_windows: int) -> pd.DataFrame:
    """One row per window: energy (GPU and server), power, servers and GPUs on, latency, SLO, cost."""
    hw, gps = settings.hardware, params.gpus_per_server
    idle_w, non_gpu_w = table.gpu_idle_w, hw.server_non_gpu_power_w
    wdf = asg.windows.set_index("window").reindex(range(n_windows), fill_value=0)
    active_j = np.bincount(asg.ticks["window"].to_numpy(), weights=tick_energy_j, minlength=n_windows)[:n_windows] \
        if len(asg.ticks) else np.zeros(n_windows)
    on = wdf["servers_on"].to_numpy(float)
    started = wdf["servers_started"].to_numpy(float)
    drained = wdf["servers_drained"].to_numpy(float)
    idle_gpus = np.maximum(on * gps - wdf["gpus_in_instances"].to_numpy(float), 0)
    gpu_j = (active_j + idle_gpus * idle_w * params.window_s + (started * params.server_start_s + drained * params.drain_s)
             * gps * idle_w)
    server_s = on * params.window_s + started * params.server_start_s + drained * params.drain_s
    server_j = gpu_j + non_gpu_w * server_s
    w_of = np.minimum((trace["t_s"].to_numpy() // params.window_s).astype(np.int64), n_windows - 1)
    cls = trace["cls"].to_numpy().astype(np.int64)
    slo_ttft, slo_tbt = _slo_arrays(table, asg.classes)
    ttft, tbt = lat["ttft_s"].to_numpy(), lat["tbt_s"].to_numpy()
    ok_ttft = np.nan_to_num(ttft, nan=np.inf) <= slo_ttft[cls]
    ok_tbt = np.nan_to_num(tbt, nan=np.inf) <= slo_tbt[cls]
    rows = []
    # the trace is sorted by arrival, so each window's requests are one slice
    cuts = np.searchsorted(w_of, np.arange(n_windows + 1), side="left")
    cuts[-1] = len(w_of)
    dropped_r, moved_r, reord_r = asg.row < 0, asg.moved, asg.reordered
    both = ok_ttft & ok_tbt
    for w in range(n_windows):
        m = slice(cuts[w], cuts[w + 1])
        ok = ~np.isnan(ttft[m])
        q = lambda a, p: float(np.quantile(a[m][ok], p)) if ok.any() else float("nan")  # noqa: E731
        n = cuts[w + 1] - cuts[w]
        gpu_hours = (on[w] * params.window_s + started[w] * params.server_start_s) * gps / 3600.0
        kwh = server_j[w] / J_PER_KWH
        rows.append(dict(
            window=w, window_start_s=w * params.window_s, requests=int(n), dropped=int(dropped_r[m].sum()),
            moved=int(moved_r[m].sum()), reordered=int(reord_r[m].sum()),
            gpu_energy_j=float(gpu_j[w]), server_energy_j=float(server_j[w]),
            gpu_power_w=float(gpu_j[w] / params.window_s), server_power_w=float(server_j[w] / params.window_s),
            servers_on=int(on[w]), gpus_on=int(on[w] * gps), gpus_active=int(wdf["gpus_in_instances"].iloc[w]),
            servers_started=int(started[w]), servers_drained=int(drained[w]), reshards=int(wdf["reshards"].iloc[w]),
            ttft_p50_s=q(ttft, 0.5), ttft_p99_s=q(ttft, 0.99), tbt_p50_s=q(tbt, 0.5), tbt_p99_s=q(tbt, 0.99),
            ttft_attainment=float(ok_ttft[m].mean()) if n else float("nan"),
            tbt_attainment=float(ok_tbt[m].mean()) if n else float("nan"),
            slo_attainment=float(both[m].mean()) if n else float("nan"),
            gpu_hours=gpu_hours,
            cost_usd=gpu_hours * settings.prices.gpu_usd_per_hour + kwh * settings.prices.energy_usd_per_kwh,
            carbon_g=kwh * settings.carbon.default_g_per_kwh))
    return pd.DataFrame(rows)


def summarise(windows: pd.DataFrame, requests: pd.DataFrame, table: ProfileTable, classes: list[str],
              asg: Assignment, params: ClusterParams) -> dict:
    """Whole-run figures: energy, mean power, servers, latency percentiles, attainment, counters."""
    served = requests.dropna(subset=["ttft_s"])
    slo_ttft, slo_tbt = _slo_arrays(table, classes)
    c = requests["cls"].to_numpy().astype(np.int64)
    ok_ttft = requests["ttft_s"].fillna(np.inf).to_numpy() <= slo_ttft[c]
    ok_tbt = requests["tbt_s"].fillna(np.inf).to_numpy() <= slo_tbt[c]
    dur_s = len(windows) * params.window_s
    q = lambda col, p: float(served[col].quantile(p)) if len(served) else float("nan")  # noqa: E731
    return dict(
        requests=int(len(requests)), served=int(len(served)),
        gpu_energy_kwh=float(windows["gpu_energy_j"].sum() / J_PER_KWH),
        server_energy_kwh=float(windows["server_energy_j"].sum() / J_PER_KWH),
        mean_gpu_power_kw=float(windows["gpu_energy_j"].sum() / dur_s / 1e3),
        mean_servers_on=float(windows["servers_on"].mean()), peak_servers_on=int(windows["servers_on"].max()),
        mean_gpus_on=float(windows["gpus_on"].mean()),
        ttft_p50_s=q("ttft_s", 0.5), ttft_p99_s=q("ttft_s", 0.99), tbt_p50_s=q("tbt_s", 0.5), tbt_p99_s=q("tbt_s", 0.99),
        ttft_attainment=float(ok_ttft.mean()), tbt_attainment=float(ok_tbt.mean()),
        slo_attainment=float((ok_ttft & ok_tbt).mean()),
        gpu_hours=float(windows["gpu_hours"].sum()), cost_usd=float(windows["cost_usd"].sum()),
        carbon_kg=float(windows["carbon_g"].sum() / 1e3), **p99_slo_met(c, requests["t_s"].to_numpy(), ok_ttft, ok_tbt, params.window_s),
        **asg.counters)


def p99_slo_met(cls: np.ndarray, t_s: np.ndarray, ok_ttft: np.ndarray, ok_tbt: np.ndarray, window_s: float) -> dict:
    """The SLOs read as P99 targets (DESIGN §4), from each request's class, arrival and whether it
    met its TTFT and TBT SLO (a dropped request met neither): ``p99_classes_met`` of ``p99_classes``
    classes whose P99 TTFT and P99 TBT over the run are within their SLOs — at least 99% of their
    requests within each (the empirical quantile) — and ``p99_cells_met``, the share of requests in
    (5-minute window, class) cells whose P99s are."""
    if cls.size == 0:
        return dict(p99_classes_met=0, p99_classes=0, p99_cells_met=float("nan"))
    c = np.asarray(cls, dtype=np.int64)
    k = int(c.max()) + 1

    def met(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Requests per key and whether at least 99% of them meet each SLO (keys with requests)."""
        n = np.bincount(key)
        t = np.bincount(key, weights=ok_ttft, minlength=n.size)
        b = np.bincount(key, weights=ok_tbt, minlength=n.size)
        has = n > 0
        n, t, b = n[has], t[has], b[has]
        return n, (t >= 0.99 * n - 1e-9) & (b >= 0.99 * n - 1e-9)

    _n, runs_ok = met(c)
    cell_n, cells_ok = met((np.asarray(t_s) // window_s).astype(np.int64) * k + c)
    return dict(p99_classes_met=int(runs_ok.sum()), p99_classes=int(runs_ok.size),
                p99_cells_met=float((cell_n * cells_ok).sum() / cell_n.sum()))
