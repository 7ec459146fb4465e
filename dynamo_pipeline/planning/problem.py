"""The planner's inputs as plain data: the cell table from a profile, the loads, budgets and costs.

A *cell* is one (class c, TP t, clock f, per-instance load level ℓ) row of a profile with its power
and P99 latencies. :func:`pool_problem` turns a profile DataFrame (columns of DESIGN §3), per-class
loads, GPU budgets and settings into a :class:`PoolProblem`: per (pool, class) demand, per pool GPU
budget, the SLO-feasible cells with their objective coefficient, and the previous plan's instance
counts for reconfiguration terms. The MILP (``model.py``), the scorer (``score.py``), the greedy
fallback (``greedy.py``) and brute force in the tests all read this one object, so they agree on
what a plan costs. Nothing here reads files: profiles and loads are passed in.

Loads: a forecast's upper quantile (mapping or Series class → rps) when there is one; otherwise an
observed load or a constant (:func:`resolve_loads` says which was used, and the plan carries it as
a flag).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dynamo_pipeline.config import Settings

REQUIRED_COLUMNS = ("class_name", "tp", "freq_mhz", "load_rps", "ttft_p99_s", "tbt_p99_s", "power_w")
J_PER_KWH = 3.6e6
#: Budget key meaning "all pools share this many GPUs".
ALL_POOLS = "*"


class PlanningError(ValueError):
    """The planner's inputs cannot be used; the message says what is missing and how to fix it."""


@dataclass(frozen=True)
class Cell:
    """One profile row an instance may run at: class, TP, clock, load level, power and latencies.
    A *mixed* cell (``mix`` non-empty, ``cls`` = :func:`mix_name` of its pool) is an instance that
    serves several classes, each its share of ``load_rps`` (see :func:`mixed_cells`)."""

    cls: str
    tp: int
    freq_mhz: int
    load_rps: float
    power_w: float
    ttft_p99_s: float
    tbt_p99_s: float
    mix: tuple[tuple[str, float], ...] = ()     # (class, share of load_rps); empty: cls alone

    def served(self) -> tuple[tuple[str, float], ...]:
        """(class, rps) this cell's instance serves."""
        return tuple((c, self.load_rps * sh) for c, sh in self.mix) if self.mix else ((self.cls, self.load_rps),)


def mix_name(pool: str) -> str:
    """The class name mixed instances of ``pool`` carry in plans."""
    return f"mix:{pool}"


@dataclass(frozen=True)
class Costs:
    """Converts physical quantities into objective units (w_energy·kWh + w_gpu·USD + w_carbon·kg)."""

    window_s: float
    weight_energy: float
    weight_gpu_cost: float
    weight_carbon: float
    gpu_usd_per_hour: float
    carbon_g_per_kwh: float
    start_j_per_gpu: float          # energy wasted while a new instance loads, per GPU
    start_s: float                  # GPU time wasted while it loads
    reshard_j_per_gpu: float
    reshard_s: float
    horizon_s: float                # a change must pay for itself within this time
    max_changes: int                # instances started per window before staggering
    idle_credit_w: float = 0.0      # per GPU: idle draw paid whether or not an instance uses the GPU

    def energy(self, joules: float) -> float:
        kwh = joules / J_PER_KWH
        return self.weight_energy * kwh + self.weight_carbon * kwh * self.carbon_g_per_kwh / 1000.0

    def gpu_time(self, gpu_s: float) -> float:
        return self.weight_gpu_cost * self.gpu_usd_per_hour * gpu_s / 3600.0

    def cell(self, power_w: float, tp: int) -> float:
        """Objective coefficient of one instance in a cell for one window. With ``idle_credit_w``
        (GPUs on servers that are on anyway) only the draw above idle counts, so spare GPUs are
        used at lower clocks whenever that costs less than running fewer GPUs faster."""
        return self.energy((power_w - tp * self.idle_credit_w) * self.window_s) + self.gpu_time(tp * self.window_s)

    @property
    def amortise(self) -> float:
        """Share of a one-off change cost charged to this window."""
        return min(1.0, self.window_s / self.horizon_s)

    @property
    def start_per_gpu(self) -> float:
        return self.amortise * (self.energy(self.start_j_per_gpu) + self.gpu_time(self.start_s))

    @property
    def reshard_per_gpu(self) -> float:
        return self.amortise * (self.energy(self.reshard_j_per_gpu) + self.gpu_time(self.reshard_s))


@dataclass(frozen=True)
class MixSpec:
    """How mixed cells are built for a problem (:func:`mixed_cells`): TP degrees, utilisation
    levels, idle draw per GPU."""

    tps: tuple[int, ...]
    levels: int
    idle_w: float


@dataclass
class PoolProblem:
    """One pool-level window. ``demand[(p, c)]`` rps of class c served by pool p; ``budget[p]``
    GPUs (or ``budget["*"]`` shared by all pools); ``cells[c]`` the SLO-feasible, non-dominated cells of class c; ``prev[(p, t)]`` the
    instances of TP t that pool p ran in the previous plan (None: no previous plan, no change terms);
    ``table`` every profile cell (for scoring plans that use any cell, a baseline's too)."""

    demand: dict[tuple[str, str], float]
    budget: dict[str, int]                 # pool → GPUs, or {ALL_POOLS: GPUs} for one shared budget
    cells: dict[str, list[Cell]]
    costs: Costs
    prev: dict[tuple[str, int], int] | None = None
    table: dict[tuple[str, int, int, float], Cell] = field(default_factory=dict)
    slo: dict[str, tuple[float, float]] = field(default_factory=dict)
    top_mhz: int = 0
    flags: list[str] = field(default_factory=list)
    mix_cells: dict[str, list[Cell]] = field(default_factory=dict)   # pool → mixed cells (may be empty)
    mix_spec: MixSpec | None = None        # mixed instances carry the remainders (``solve.plan_pool``)

    @property
    def pools(self) -> list[str]:
        return list(dict.fromkeys(p for (p, _c) in self.demand))

    def budget_pools(self, key: str) -> list[str]:
        """The pools a budget key covers (all of them for the shared key)."""
        return self.pools if key == ALL_POOLS else [key]

    def classes_of(self, pool: str) -> list[str]:
        return [c for (p, c) in self.demand if p == pool]

    def cell_cost(self, cell: Cell) -> float:
        return self.costs.cell(cell.power_w, cell.tp)


def resolve_loads(classes: Sequence[str], forecast: Mapping[str, float] | pd.Series | None = None,
                  observed: Mapping[str, float] | pd.Series | None = None,
                  constant_rps: float | None = None) -> tuple[dict[str, float], str]:
    """Per-class load and where it came from: the forecast where it has the class, else the observed
    load, else the constant; ``("forecast" | "observed" | "constant" | "mixed")``. Raises
    :class:`PlanningError` when a class has no load from any source."""
    out: dict[str, float] = {}
    used: set[str] = set()
    for c in classes:
        for name, src in (("forecast", forecast), ("observed", observed)):
            if src is not None and c in src and pd.notna(src[c]):
                out[c] = max(0.0, float(src[c]))
                used.add(name)
                break
        else:
            if constant_rps is None:
                raise PlanningError(
                    f"no load for class {c}: no forecast or observed rate for it; run `dynamo forecast` "
                    "or pass a constant load (`--load-rps`)"
                )
            out[c] = float(constant_rps)
            used.add("constant")
    return out, (used.pop() if len(used) == 1 else "mixed" if used else "constant")


#: Results computed from one profile frame or cell table, by the object's identity (the object is
#: kept with its result, so its id is not reused while cached). Planning never modifies a profile
#: frame in place; a caller that does must pass a copy.
_MEMO: OrderedDict[tuple, tuple[object, object]] = OrderedDict()
_MEMO_SIZE = 64


def memo_by_identity(obj: object, extra: tuple, compute):
    """``compute()``, remembered for (``obj``, ``extra``) while ``obj`` is the same object."""
    key = (id(obj), extra)
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is obj:
        _MEMO.move_to_end(key)
        return hit[1]
    value = compute()
    _MEMO[key] = (obj, value)
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return value


def cell_table(profiles: pd.DataFrame) -> dict[tuple[str, int, int, float], Cell]:
    """Every profile row as a :class:`Cell`, keyed (class, tp, freq_mhz, load_rps) (remembered per
    frame)."""
    return memo_by_identity(profiles, ("cells",), lambda: _cell_table(profiles))


def _cell_table(profiles: pd.DataFrame) -> dict[tuple[str, int, int, float], Cell]:
    missing = [c for c in REQUIRED_COLUMNS if c not in profiles.columns]
    if missing:
        raise PlanningError(f"profile frame lacks columns {missing}; pass a profile as written by `dynamo profile`")
    cols = [profiles[c].to_numpy() for c in REQUIRED_COLUMNS]
    table = {}
    for cls, tp, f, ld, ttft, tbt, pw in zip(*cols):
        cell = Cell(str(cls), int(tp), int(f), float(ld), float(pw), float(ttft), float(tbt))
        table[(cell.cls, cell.tp, cell.freq_mhz, cell.load_rps)] = cell
    return table


def profile_slos(settings: Settings, profiles: pd.DataFrame,
                 classes: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
    """(TTFT, TBT) P99 SLO per class (all configured classes, or ``classes``): the settings' (with
    per-class overrides), except that a long-input class (input letter L) without an override may
    take ``long_input_ttft_factor`` × its bare prefill time — the profile's lowest-load P50 TTFT on
    its largest TP at the top clock — when that is larger (DESIGN §1). The planner, the schedules
    and the simulator all judge cells by these."""
    names = list(classes) if classes is not None else settings.classes.names()
    out = {}
    tp_max = int(profiles["tp"].max()) if len(profiles) else 0
    for c in names:
        ttft, tbt = settings.slo.for_class(c)
        if c.startswith("L") and c not in settings.slo.per_class and "ttft_p50_s" in profiles.columns:
            g = profiles[(profiles["class_name"] == c) & (profiles["tp"] == tp_max)]
            if not g.empty:
                g = g[g["freq_mhz"] == g["freq_mhz"].max()].sort_values("load_rps")
                ttft = max(ttft, settings.slo.long_input_ttft_factor * float(g["ttft_p50_s"].iloc[0]))
        out[c] = (ttft, tbt)
    return out


def meets_slo(cell: Cell, slo: tuple[float, float]) -> bool:
    return cell.ttft_p99_s <= slo[0] and cell.tbt_p99_s <= slo[1] and cell.load_rps > 0


def useful_cells(table: Mapping[tuple, Cell], slo: Mapping[str, tuple[float, float]], costs: Costs,
                 tps: Sequence[int] | None = None) -> dict[str, list[Cell]]:
    """SLO-feasible cells per class with dominated ones dropped. Exact for the pool-level MILP:
    at equal (c, t) a cell is dropped when another has at least its load for at most its cost
    (swapping one for the other keeps coverage, GPUs and instance counts and does not cost more)."""
    by_ct: dict[tuple[str, int], list[Cell]] = {}
    for cell in table.values():
        if cell.cls in slo and (tps is None or cell.tp in tps) and meets_slo(cell, slo[cell.cls]):
            by_ct.setdefault((cell.cls, cell.tp), []).append(cell)
    out: dict[str, list[Cell]] = {c: [] for c in slo}
    for (c, _t), cells in sorted(by_ct.items()):
        out[c].extend(_undominated(cells, costs))
    return out


def _undominated(cells: list[Cell], costs: Costs) -> list[Cell]:
    """Cells of one (class, TP) that no other beats on both load and cost."""
    # highest load first, ties: cheapest first; keep a cell only if cheaper than all kept so far
    cells = sorted(cells, key=lambda x: (-x.load_rps, costs.cell(x.power_w, x.tp), x.freq_mhz))
    kept, best = [], np.inf
    for cell in cells:
        k = costs.cell(cell.power_w, cell.tp)
        if k < best - 1e-15:
            kept.append(cell)
            best = k
    return kept


def class_curves(table: Mapping[tuple, Cell], slo: Mapping[str, tuple[float, float]]) -> dict[tuple[str, int, int], tuple]:
    """Per (class, TP, clock): load levels, power at each, and the SLO capacity — the highest level
    up to which every level meets the class's SLO (0: none). Remembered per table and SLOs."""
    return memo_by_identity(table, ("curves", tuple(sorted(slo.items()))), lambda: _class_curves(table, slo))


def _class_curves(table: Mapping[tuple, Cell], slo: Mapping[str, tuple[float, float]]) -> dict[tuple[str, int, int], tuple]:
    rows: dict[tuple[str, int, int], list[Cell]] = {}
    for cell in table.values():
        if cell.cls in slo and cell.load_rps > 0:
            rows.setdefault((cell.cls, cell.tp, cell.freq_mhz), []).append(cell)
    out = {}
    for key, cells in rows.items():
        cells.sort(key=lambda x: x.load_rps)
        cap = 0.0
        for cell in cells:
            if not meets_slo(cell, slo[key[0]]):
                break
            cap = cell.load_rps
        out[key] = (np.array([x.load_rps for x in cells]), np.array([x.power_w for x in cells]), cap)
    return out


def _power_at(curve: tuple, load_rps: float, idle_w: float) -> float:
    """A class's power at ``load_rps`` on one setting: interpolated on its grid, falling linearly to
    idle below the grid's first level (as the simulator's lookups do)."""
    loads, power, _cap = curve
    if load_rps < loads[0]:
        return idle_w + (float(power[0]) - idle_w) * load_rps / loads[0]
    return float(np.interp(load_rps, loads, power))


def mixed_cells(table: Mapping[tuple, Cell], slo: Mapping[str, tuple[float, float]], loads: Mapping[str, float],
                name: str, tps: Sequence[int], levels: int = 8, costs: Costs | None = None,
                idle_w: float = 75.0) -> list[Cell]:
    """Cells of an instance that serves ``loads``' classes in their proportions π_c (DESIGN §4).

    At (TP t, clock f) class c alone meets its SLO up to cap_c (:func:`class_curves`); a mix at
    total load x fills the instance to u = x·Σ_c π_c/cap_c, and meets every class's SLO while
    u ≤ 1 (the simulator's utilisation model). Levels u = k/``levels``; power from each class's
    power at its own load π_c·x (:func:`mixed_power_w`; ``idle_w`` per GPU). Settings where some
    class of the mix has no SLO-feasible load get no cell. With ``costs``, dominated cells are
    dropped as in :func:`useful_cells`."""
    total = sum(v for v in loads.values() if v > 0)
    if total <= 0:
        return []
    pi = {c: v / total for c, v in loads.items() if v > 0}
    mix = tuple(sorted(pi.items()))
    names = [c for c, _p in mix]
    curves = class_curves(table, {c: slo[c] for c in pi})
    clocks = sorted({k[2] for k in curves})
    out: list[Cell] = []
    for t in tps:
        by_tp: list[Cell] = []
        idle = t * idle_w
        for f in clocks:
            caps = {c: curves[(c, t, f)][2] if (c, t, f) in curves else 0.0 for c in pi}
            if min(caps.values()) <= 0:
                continue
            inv = sum(pi[c] / caps[c] for c in pi)          # utilisation per rps of the mix
            weights = np.array([pi[c] / caps[c] / inv for c in names])
            sat = np.array([curves[(c, t, f)][1].max() for c in names])
            for k in range(1, levels + 1):
                u = k / levels
                own = np.array([_power_at(curves[(c, t, f)], u / inv * pi[c], idle) for c in names])
                power = float(mixed_power_w(idle, own, sat, weights))
                by_tp.append(Cell(name, t, f, u / inv, power, slo_bound(slo, pi, 0), slo_bound(slo, pi, 1), mix))
        out.extend(_undominated(by_tp, costs) if costs is not None else by_tp)
    return out


def slo_bound(slo: Mapping[str, tuple[float, float]], classes, i: int) -> float:
    """The tightest SLO (0: TTFT, 1: TBT) among ``classes``: a mixed cell meets it by construction."""
    return min(slo[c][i] for c in classes)


def mixed_power_w(idle_w, own_w, sat_w, weights):
    """Power (W) of an instance serving several classes at once, from single-class profiles.

    ``own_w[..., c]``: the instance's power serving class c alone at c's load; ``sat_w[..., c]``:
    its highest power serving c alone (the profiled grid's top); ``weights[..., c]``: c's share of
    the instance's utilisation (summing to 1); ``idle_w[...]``: the GPUs' idle draw. Class c alone
    keeps the GPUs busy a fraction β_c = (own − idle) / (sat − idle) of the time; together they are
    busy 1 − Π_c (1 − β_c) of it, drawing the classes' saturated dynamic power weighted by their
    shares. One class alone gives exactly its profiled power. Against the simulated engine serving
    the mixed streams this is within 4% of GPU energy on the Azure hours (``tests/test_sim_modes.py``);
    a utilisation-weighted mean of the classes' powers was 8–12% low."""
    idle_w = np.asarray(idle_w, float)
    dyn = np.clip(np.asarray(own_w, float) - idle_w[..., None], 0.0, None)
    sat = np.maximum(np.asarray(sat_w, float) - idle_w[..., None], 1e-9)
    busy = 1.0 - np.prod(1.0 - np.clip(dyn / sat, 0.0, 1.0), axis=-1)
    return idle_w + (np.asarray(weights, float) * sat).sum(axis=-1) * busy


def costs_from_settings(settings: Settings, window_s: float | None = None,
                        carbon_g_per_kwh: float | None = None, gpus_on: bool = False) -> Costs:
    pl, hw = settings.planner, settings.hardware
    window_s = float(window_s or pl.pool_interval_s)
    per_gpu_loading_w = pl.gpu_idle_w + hw.server_non_gpu_power_w / hw.gpus_per_server
    return Costs(
        window_s=window_s, weight_energy=pl.weight_energy, weight_gpu_cost=pl.weight_gpu_cost,
        weight_carbon=pl.weight_carbon, gpu_usd_per_hour=settings.prices.gpu_usd_per_hour,
        carbon_g_per_kwh=settings.carbon.default_g_per_kwh if carbon_g_per_kwh is None else carbon_g_per_kwh,
        start_j_per_gpu=hw.server_start_s * per_gpu_loading_w, start_s=hw.server_start_s,
        reshard_j_per_gpu=pl.reshard_s * per_gpu_loading_w, reshard_s=pl.reshard_s,
        horizon_s=pl.reconfig_horizon_s, max_changes=pl.max_changes_per_window,
        idle_credit_w=pl.gpu_idle_w if gpus_on else 0.0,
    )


def pool_problem(profiles: pd.DataFrame, loads: Mapping[str, float] | pd.Series, settings: Settings,
                 gpu_budget: int | Mapping[str, int], pools: Mapping[str, Mapping[str, float] | Sequence[str]] | None = None,
                 prev: Mapping[tuple[str, int], int] | None = None, window_s: float | None = None,
                 carbon_g_per_kwh: float | None = None, gpus_on: bool = False) -> PoolProblem:
    """Build a :class:`PoolProblem`.

    ``loads``: class → rps (e.g. a forecast's ``upper_rps``). ``pools``: pool → its classes (all of
    each class's load) or pool → {class: rps} (a share, as the cluster level splits spilled load);
    default one pool per class, named after it. ``gpu_budget``: total GPUs (one shared budget, pool
    "all" when ``pools`` is None and an int is given) or pool → GPUs. ``prev``: (pool, tp) → instances
    in the previous plan. ``gpus_on``: the budgets are GPUs of servers that are on for the window
    (the cluster level's), so an instance costs only its draw above idle (:class:`Costs`)."""
    loads = {str(k): float(v) for k, v in dict(loads).items()}
    if pools is None:
        pools = {c: [c] for c in loads}
    demand: dict[tuple[str, str], float] = {}
    for p, members in pools.items():
        if isinstance(members, Mapping):
            for c, rps in members.items():
                demand[(p, c)] = float(rps)
        else:
            for c in members:
                if c not in loads:
                    raise PlanningError(f"pool {p} serves class {c} but no load was given for it")
                demand[(p, c)] = loads[c]
    if isinstance(gpu_budget, Mapping):
        missing = [p for p in pools if p not in gpu_budget]
        if missing:
            raise PlanningError(f"no GPU budget for pools {missing}; pass one per pool or a single total")
        budget = {p: int(gpu_budget[p]) for p in pools}
    else:
        budget = {ALL_POOLS: int(gpu_budget)}
    classes = sorted({c for (_p, c) in demand})
    slo = profile_slos(settings, profiles, classes)
    costs = costs_from_settings(settings, window_s, carbon_g_per_kwh, gpus_on)
    table = cell_table(profiles)
    cells = useful_cells(table, slo, costs, settings.hardware.tp_degrees)
    flags = [f"no SLO-feasible cell for class {c}" for c in classes if not cells.get(c)]
    top = int(max((k[2] for k in table), default=0))
    spec = (MixSpec(tuple(settings.hardware.tp_degrees), settings.planner.mix_levels, settings.planner.gpu_idle_w)
            if settings.planner.mixed_instances else None)
    return PoolProblem(demand=demand, budget=budget, cells=cells, costs=costs,
                       prev=dict(prev) if prev is not None else None, table=table, slo=slo, top_mhz=top, flags=flags,
                       mix_spec=spec)
