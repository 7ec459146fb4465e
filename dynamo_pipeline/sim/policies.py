"""Policies: how a fleet is configured window by window. One registry, keyed by name.

Every policy turns a :class:`PolicyContext` (profile, settings, per-window loads, a forecaster)
into one :class:`~dynamo_pipeline.sim.plan.WindowPlan` per pool-level window. The planner's code
sizes them all, so every policy is costed by the same rules (DESIGN §7):

=============  ==============================================================================
singlepool     one pool serving every class, TP8 at the top clock, sized for the trace's peak
               (instances = ⌈peak Σ_c λ_c / capacity_c⌉, mixed traffic on every instance)
multipool      one static pool per class, TP8 at the top clock, each sized for its class's peak by
               the pool-level MILP restricted to that setting
scaleinst      multipool whose servers follow the forecast: the cluster and pool levels of the
               planner every 30 / 5 min, restricted to TP8 at the top clock
scaleshard     multipool's servers, fixed; the pool-level MILP re-picks the TP of the instances on
               them every window (top clock only)
scalefreq      multipool's instances; each instance's agent picks its clock from the planner's
               clock table by observed load
dynamollm      all three knobs, hierarchical: cluster level (servers per pool, sized by the MILP
               at the peak of the forecasts made over the start-up time) at every
               ``cluster_interval_s`` boundary; between boundaries scale-out when the forecasts
               grow and (``planner.early_scale_in``) scale-in when the load measured in the
               window just ended, raised by ``planner.scale_in_margin``, no longer needs a
               server; pool-level MILP every 5 min within the servers on; clock tables per
               instance
oracle         dynamollm with the true future load and true lengths (the caller replays it with
               predicted = true classes): at a boundary the true peak over the coming interval (or
               the start-up time, if longer); between boundaries the true peak over the start-up
               time (scale-in too with ``early_scale_in``)
=============  ==============================================================================

Loads given to policies are per-window planning rates (:func:`~.replay.peak_tick_loads`: each
class's mean rate scaled by the window's burst at the tick scale): an instance sized for a window's
mean overflows at its busiest minute.
Forecasting policies see the loads of the predicted classes up to the previous window only at the
pool level, and only up to the window that ends before the servers must start at the cluster level
(2 windows earlier for a 420 s start-up).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from dynamo_pipeline.config import Settings
from dynamo_pipeline.planning.cluster import ClusterPlan, cluster_plan
from dynamo_pipeline.planning.clocks import clock_table, mix_clock_table
from dynamo_pipeline.planning.problem import pool_problem
from dynamo_pipeline.planning.solve import plan_pool
from dynamo_pipeline.sim.plan import InstancePlan, WindowPlan
from dynamo_pipeline.sim.profile_view import ProfileTable

#: A forecaster for the simulator: history (windows × classes, rps) → next window's rps per class.
Forecaster = Callable[[pd.DataFrame], pd.Series]


class PolicyError(ValueError):
    """A policy cannot plan with what it was given; the message says what to change."""


@dataclass
class PolicyContext:
    """What a policy may know. ``true_loads``: windows × classes planning rps of the true classes;
    ``observed_loads``: the same by predicted class (what the gateway sees)."""

    settings: Settings
    profile: pd.DataFrame
    table: ProfileTable
    classes: list[str]
    true_loads: pd.DataFrame
    observed_loads: pd.DataFrame
    forecaster: Forecaster
    window_s: float = 300.0
    max_servers: int = 10_000
    progress: bool = False
    notes: list[str] = field(default_factory=list)
    _clock_tables: dict = field(default_factory=dict, repr=False)

    def clock_table(self, cls: str, tp: int, mix: tuple[tuple[str, float], ...] = ()) -> tuple[tuple[float, int], ...]:
        """The planner's clock table for (class, TP), or for a mixed instance's ``mix`` (memoised)."""
        key = (cls, tp, mix)
        if key not in self._clock_tables:
            if mix:
                slo = {c: self.table.slo[c] for c, _sh in mix}
                bands = mix_clock_table(self.profile, mix, tp, slo, self.settings.planner.mix_levels,
                                        self.settings.planner.gpu_idle_w)
            else:
                bands = clock_table(self.profile, cls, tp, self.table.slo[cls])
            self._clock_tables[key] = tuple(bands)
        return self._clock_tables[key]

    @property
    def n_windows(self) -> int:
        return len(self.true_loads)

    def latest(self, w: int, factor: float = 1.0) -> dict[str, float]:
        """The load observed in the window before w (the newest measurement), times ``factor``."""
        row = self.observed_loads.iloc[max(0, w - 1)]
        return {c: max(0.0, float(row.get(c, 0.0))) * factor for c in self.classes}

    def forecast(self, w: int, lag: int = 0) -> dict[str, float]:
        """Forecast for window w from observed windows < w − ``lag`` (a decision taken ``lag``
        windows early, as servers must be started before they serve; the first windows: the forecast
        from window 0's observation, as a fleet that starts the replay already configured for it)."""
        hist = self.observed_loads.iloc[:max(1, w - lag)]
        row = self.forecaster(hist)
        return {c: max(0.0, float(row.get(c, 0.0))) for c in self.classes}


Policy = Callable[[PolicyContext], list[WindowPlan]]
POLICIES: dict[str, Policy] = {}


def register(name: str) -> Callable[[Policy], Policy]:
    def deco(fn: Policy) -> Policy:
        POLICIES[name] = fn
        return fn
    return deco


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise PolicyError(f"unknown policy {name!r}; choose one of {sorted(POLICIES)}") from None


# -- helpers --------------------------------------------------------------------------------------

def _restrict(profile: pd.DataFrame, tp: int | None = None, top_clock: bool = False) -> pd.DataFrame:
    out = profile
    if tp is not None:
        out = out[out["tp"] == tp]
    if top_clock:
        top = out.groupby("tp")["freq_mhz"].transform("max")
        out = out[out["freq_mhz"] == top]
    if out.empty:
        raise PolicyError(f"the profile has no rows at TP{tp}{' and the top clock' if top_clock else ''}; "
                          "profile that setting first")
    return out


def _instances_from_pool_plan(plan, ctx: PolicyContext, w: int, clock_tables: bool) -> list[InstancePlan]:
    out = []
    seen: dict[str, int] = {}
    for g in plan.groups:
        top = ctx.table.top_clock(g.tp)
        # the whole table, not cut at the planned load: a tick above it moves to the next cheapest
        # clock that meets the SLO there, not straight to the top clock
        table = ctx.clock_table(g.cls, g.tp, g.mix) if clock_tables else ()
        prefix = f"{g.pool}/{g.cls}/tp{g.tp}"
        class_rps = tuple(g.class_rps().items()) if g.mix else ()
        for _ in range(g.count):
            k = seen[prefix] = seen.get(prefix, -1) + 1   # numbered across groups of one (pool, class, TP)
            out.append(InstancePlan(f"{prefix}/{k}", g.pool, g.tp, g.classes,
                                    g.freq_mhz if clock_tables else top, g.load_rps, top, table, class_rps))
    return out


def _peak(loads: pd.DataFrame, classes: list[str]) -> dict[str, float]:
    return {c: float(loads[c].max()) if c in loads else 0.0 for c in classes}


def _window_plan(pools: dict[str, tuple[str, ...]], instances: list[InstancePlan], ctx: PolicyContext,
                 servers: dict[str, int] | None = None, flags: list[str] | None = None) -> WindowPlan:
    return WindowPlan(pools=pools, instances=instances, gpus_per_server=ctx.settings.hardware.gpus_per_server,
                      servers_by_pool=servers, flags=list(flags or []))


def _multipool_base(ctx: PolicyContext) -> tuple[dict[str, tuple[str, ...]], list[InstancePlan], dict[str, int]]:
    """Static per-class pools at TP8 and the top clock, each sized for its class's peak by the MILP."""
    tp = max(ctx.settings.hardware.tp_degrees)
    prof = _restrict(ctx.profile, tp=tp, top_clock=True)
    peak = {c: v for c, v in _peak(ctx.true_loads, ctx.classes).items() if v > 0}
    if not peak:
        raise PolicyError("the trace has no load; nothing to size pools for")
    problem = pool_problem(prof, peak, ctx.settings, gpu_budget=10**7, window_s=ctx.window_s)
    plan = plan_pool(problem, ctx.settings.planner.solver, ctx.settings.planner.time_limit_s,
                     ctx.settings.planner.mip_rel_gap)
    pools = {c: (c,) for c in peak}
    insts = _instances_from_pool_plan(plan, ctx, 0, clock_tables=False)
    gps = ctx.settings.hardware.gpus_per_server
    servers = {p: math.ceil(sum(i.tp for i in insts if i.pool == p) / gps) for p in pools}
    return pools, insts, servers


# -- the policies ---------------------------------------------------------------------------------

@register("singlepool")
def singlepool(ctx: PolicyContext) -> list[WindowPlan]:
    tp = max(ctx.settings.hardware.tp_degrees)
    top = ctx.table.top_clock(tp)
    n = singlepool_instances(ctx.true_loads, ctx.table, ctx.classes, tp)
    pool = ("all", tuple(ctx.classes))
    insts = [InstancePlan(f"all/tp{tp}/{k}", "all", tp, tuple(ctx.classes), top, 1.0, top) for k in range(n)]
    plan = _window_plan(dict([pool]), insts, ctx)
    return [plan] * ctx.n_windows


def singlepool_instances(loads: pd.DataFrame, table: ProfileTable, classes: list[str], tp: int = 8) -> int:
    """TP-``tp`` top-clock instances one mixed pool needs for the peak: ⌈max_w Σ_c λ_c / cap_c⌉."""
    return math.ceil(peak_utilisation(loads, table, classes, tp) - 1e-9)


def peak_utilisation(loads: pd.DataFrame, table: ProfileTable, classes: list[str], tp: int = 8) -> float:
    top = table.top_clock(tp)
    cap = np.array([table.capacity(c, tp, top) for c in classes])
    lam = loads.reindex(columns=classes, fill_value=0.0).to_numpy()
    if ((lam > 0) & (cap <= 0)).any():
        bad = [c for j, c in enumerate(classes) if cap[j] <= 0 and lam[:, j].max() > 0]
        raise PolicyError(f"classes {bad} meet their SLO on no TP{tp} top-clock instance in the profile")
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(lam > 0, lam / cap, 0.0).sum(axis=1)
    return float(u.max()) if u.size else 0.0


@register("multipool")
def multipool(ctx: PolicyContext) -> list[WindowPlan]:
    pools, insts, servers = _multipool_base(ctx)
    return [_window_plan(pools, insts, ctx, servers)] * ctx.n_windows


@register("scalefreq")
def scalefreq(ctx: PolicyContext) -> list[WindowPlan]:
    pools, insts, servers = _multipool_base(ctx)
    tuned = [InstancePlan(i.instance_id, i.pool, i.tp, i.classes, i.clock_mhz, i.max_load_rps, i.fallback_clock_mhz,
                          ctx.clock_table(i.classes[0], i.tp))
             for i in insts]
    return [_window_plan(pools, tuned, ctx, servers)] * ctx.n_windows


@register("scaleshard")
def scaleshard(ctx: PolicyContext) -> list[WindowPlan]:
    pools, _insts, servers = _multipool_base(ctx)
    prof = _restrict(ctx.profile, top_clock=True)
    gps = ctx.settings.hardware.gpus_per_server
    budget = {p: servers[p] * gps for p in pools}
    out, prev = [], None
    for w in range(ctx.n_windows):
        fc = ctx.forecast(w)
        loads = {c: fc.get(c, 0.0) for c in pools}
        problem = pool_problem(prof, loads, ctx.settings, budget, pools={p: list(cs) for p, cs in pools.items()},
                               prev=prev, window_s=ctx.window_s, gpus_on=True)
        plan = plan_pool(problem, ctx.settings.planner.solver, ctx.settings.planner.time_limit_s,
                         ctx.settings.planner.mip_rel_gap)
        prev = plan.instances_by_pool_tp()
        out.append(_window_plan(pools, _instances_from_pool_plan(plan, ctx, w, False), ctx, servers, plan.flags))
    return out


def _keep_servers(cplan: ClusterPlan, keep_peak: dict[str, float], profile: pd.DataFrame, ctx: PolicyContext,
                  headroom: float | None) -> dict[str, int]:
    """Servers per pool of ``cplan`` that ``keep_peak`` needs (the pools stay as they are)."""
    return cluster_plan(profile, keep_peak, ctx.settings, ctx.max_servers, prev=cplan, scale_in=True,
                        headroom=headroom, pool_level=False, regroup=False).servers_by_pool


def _cut(cplan: ClusterPlan, sized_for: dict[str, float], keep: dict[str, int],
         keep_peak: dict[str, float]) -> tuple[ClusterPlan, dict[str, float]]:
    """``cplan`` with each pool cut to ``keep`` servers (never more than it had) and what the
    servers are then sized for; ``cplan`` itself when no pool loses a server."""
    if all(keep.get(p.pool_id, 0) >= p.servers for p in cplan.pools):
        return cplan, sized_for
    specs = [replace(p, servers=min(p.servers, keep.get(p.pool_id, 0))) for p in cplan.pools]
    cut = replace(cplan, pools=specs, servers=sum(p.servers for p in specs))
    return cut, {c: min(v, keep_peak.get(c, 0.0)) for c, v in sized_for.items()}


def _below(a: dict[str, float], b: dict[str, float]) -> bool:
    """Some class of ``a`` is below ``b`` (else ``a`` cannot need fewer servers than ``b``)."""
    return any(a[c] < b.get(c, 0.0) - 1e-9 for c in a)


def _hierarchical(ctx: PolicyContext, profile: pd.DataFrame, clock_tables: bool, oracle: bool) -> list[WindowPlan]:
    """Cluster level every ``cluster_interval_s`` (scale-out in any window), pool level every
    window, clock tables (optional). Servers for window w start ``server_start_s`` before it, so a
    forecasting policy decides them from the windows observed by then (``lag`` windows fewer than
    the pool level, which re-plans just before the window); it sizes for the largest of its last
    ``lead`` such forecasts. With ``planner.early_scale_in`` a server then stops in any window
    where the load measured in the window before, raised by ``planner.scale_in_margin`` and the
    cluster headroom, does not need it (the oracle: the true peak over the start-up time)."""
    s = ctx.settings
    per_cluster = max(1, int(round(s.planner.cluster_interval_s / ctx.window_s)))
    lead = 1 + math.ceil(s.hardware.server_start_s / ctx.window_s)   # a started server serves after this
    loads = [(ctx.true_loads.iloc[w].to_dict() if oracle else ctx.forecast(w)) for w in range(ctx.n_windows)]
    loads = [{c: float(d.get(c, 0.0)) for c in ctx.classes} for d in loads]
    # servers for window w are started at w·Δ − start-up: the cluster level sees windows < w − lag
    lag = 0 if oracle else math.ceil(s.hardware.server_start_s / ctx.window_s)
    early = loads if oracle else [ctx.forecast(w, lag) for w in range(ctx.n_windows)]
    headroom = 0.0 if oracle else None       # the oracle knows its loads; others keep planner.cluster_headroom
    out: list[WindowPlan] = []
    cplan: ClusterPlan | None = None
    sized_for: dict[str, float] = {}
    prev_inst = None
    for w in range(ctx.n_windows):
        boundary = w % per_cluster == 0
        if oracle:   # the true peak over the coming interval (or the start-up time, if longer)
            span = loads[w: w + (max(per_cluster, lead) if boundary else lead)]
        else:        # forecasts made over the start-up time: a server stops only when none needed it
            span = early[max(0, w - lead + 1): w + 1]
        peak = {c: max(p[c] for p in span) for c in ctx.classes}
        # servers stop at once (a drain of seconds), so whether to keep them waits for the newest
        # information: the load measured in the window just ended, with a margin (the oracle: the true
        # peak over the start-up time, within which a stopped server could not come back)
        keep_peak = keep = None
        settled = False
        if s.planner.early_scale_in and w > 0:
            keep_peak = ({c: max(p[c] for p in loads[w: w + lead]) for c in ctx.classes} if oracle
                         else ctx.latest(w, 1.0 + s.planner.scale_in_margin))
        if keep_peak is not None and not boundary and _below(keep_peak, sized_for):
            keep = _keep_servers(cplan, keep_peak, profile, ctx, headroom)
            if all(keep.get(p.pool_id, 0) <= p.servers for p in cplan.pools):
                # no pool needs more than it has: servers the lagged forecasts started for this window
                # would stop at once, so the scale-out check is moot
                cplan, sized_for = _cut(cplan, sized_for, keep, keep_peak)
                settled = True
        # at a cluster boundary servers follow the peak both ways; between boundaries only scale-out,
        # which a peak no class of which exceeds what the servers were sized for cannot need
        if not settled:
            if cplan is None or boundary or any(peak[c] > sized_for[c] + 1e-9 for c in ctx.classes):
                cand = cluster_plan(profile, peak, s, ctx.max_servers, prev=cplan, scale_in=boundary,
                                    headroom=headroom, pool_level=False)
                if cplan is None or boundary or cand.servers > cplan.servers:
                    cplan, sized_for = cand, peak
            if keep_peak is not None and _below(keep_peak, sized_for):
                keep = keep if keep is not None else _keep_servers(cplan, keep_peak, profile, ctx, headroom)
                cplan, sized_for = _cut(cplan, sized_for, keep, keep_peak)
        pools = {p.pool_id: p.classes for p in cplan.pools}
        peak_dem: dict[str, float] = {}
        for p in cplan.pools:
            for c, v in p.demand_rps.items():
                peak_dem[c] = peak_dem.get(c, 0.0) + v
        share = {(p.pool_id, c): (v / peak_dem[c] if peak_dem.get(c, 0) > 0 else 1.0 / max(1, sum(1 for q in cplan.pools if c in q.demand_rps)))
                 for p in cplan.pools for c, v in p.demand_rps.items()}
        demand = {p.pool_id: {c: loads[w][c] * share[(p.pool_id, c)] for c in p.demand_rps} for p in cplan.pools}
        budget = {p.pool_id: p.servers * s.hardware.gpus_per_server for p in cplan.pools}
        problem = pool_problem(profile, loads[w], s, budget, pools=demand, prev=prev_inst, window_s=ctx.window_s,
                               gpus_on=True)
        plan = plan_pool(problem, s.planner.solver, s.planner.time_limit_s, s.planner.mip_rel_gap)
        prev_inst = plan.instances_by_pool_tp()
        insts = _instances_from_pool_plan(plan, ctx, w, clock_tables)
        out.append(_window_plan(pools, insts, ctx, cplan.servers_by_pool, cplan.flags + plan.flags))
    return out


@register("scaleinst")
def scaleinst(ctx: PolicyContext) -> list[WindowPlan]:
    prof = _restrict(ctx.profile, tp=max(ctx.settings.hardware.tp_degrees), top_clock=True)
    return _hierarchical(ctx, prof, clock_tables=False, oracle=False)


@register("dynamollm")
def dynamollm(ctx: PolicyContext) -> list[WindowPlan]:
    prof = ctx.profile[ctx.profile["tp"].isin(ctx.settings.hardware.tp_degrees)]
    return _hierarchical(ctx, prof, clock_tables=True, oracle=False)


@register("oracle")
def oracle(ctx: PolicyContext) -> list[WindowPlan]:
    prof = ctx.profile[ctx.profile["tp"].isin(ctx.settings.hardware.tp_degrees)]
    return _hierarchical(ctx, prof, clock_tables=True, oracle=True)


#: Policies replayed with true lengths (perfect prediction) whatever the trace's predictions.
PERFECT_LENGTHS = {"oracle"}
