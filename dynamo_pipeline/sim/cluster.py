"""The cluster model both replay modes share: plans over time, routing, and the fast path.

Time is cut into pool-level windows (``window_s``, the planner's 5 minutes) and, inside them, ticks
(``tick_s``) at which each instance's agent picks its clock from the observed load. For every
window the policy's :class:`~dynamo_pipeline.sim.plan.WindowPlan` is applied:

* **servers** a pool gains start ``server_start_s`` before the window (the cluster level plans that
  far ahead, DESIGN §6: 6–8 min for a 70B model); they draw idle GPU and non-GPU power while they
  load and serve nothing. Servers a pool loses drain for ``drain_s`` (finishing in-flight requests,
  taking no new ones) and are then off.
* instances of a pool whose TP changed on servers that stay are **re-sharded** over NVLink
  (``reshard_s``, about 50 ms for a 70B model), unavailable meanwhile;
* a **clock change** takes effect after a delay drawn from 50–80 ms (``clock_delay_s``): until then
  the instance runs at its old clock.

Requests are routed by their *predicted* class to the instances that serve it, in proportion to the
instances' planned load (``max_load_rps``). Per tick and instance, the model then applies the fast
path of the paper when an instance is overloaded (utilisation u = Σ_c λ_c / capacity_c > 1 —
typically because requests were predicted shorter than they are, or the forecast was low), in this
order, each step counted:

1. **re-order** the queue by deadline: every request whose true class the instance does not serve is
   counted as re-ordered (its deadline, not its arrival, sets its place);
2. **raise the clock** to the fallback (top) clock;
3. **move** not-yet-started requests — mispredicted ones first, then the latest arrivals — to an
   instance with headroom: the pool of their true class, another instance of the same pool, or the
   pool of the largest requests;
4. as the last resort, **drop** the requests that still do not fit: they would miss their deadline.

The result (:class:`Assignment`) says, per request, where it ran and whether it was moved or dropped,
and per instance and tick the clock, the loads per class and the utilisation. The fast engine looks
each instance-tick up in the profile; the detailed engine runs each on the simulated server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dynamo_pipeline.sim.plan import WindowPlan
from dynamo_pipeline.sim.profile_view import ProfileTable


@dataclass(frozen=True)
class ClusterParams:
    """Timing of the cluster model (DESIGN §6)."""

    window_s: float = 300.0
    tick_s: float = 60.0
    server_start_s: float = 420.0
    drain_s: float = 30.0
    reshard_s: float = 0.05
    clock_delay_s: tuple[float, float] = (0.05, 0.08)
    move_penalty_s: float = 0.02
    gpus_per_server: int = 8
    seed: int = 0


@dataclass
class Assignment:
    """Where every request ran and what every instance did, tick by tick.

    Per request (arrays aligned with the trace): ``row`` the instance-tick row it was served on (-1
    when dropped), ``moved``, ``reordered``. Per instance-tick (``ticks`` DataFrame): window, tick,
    instance id, pool, tp, clock, previous clock, utilisation, and ``load_<cls>`` arrivals/s per true
    class. ``windows`` has per window the servers on/starting/draining and the re-shards."""

    row: np.ndarray
    moved: np.ndarray
    reordered: np.ndarray
    ticks: pd.DataFrame
    windows: pd.DataFrame
    classes: list[str]
    counters: dict[str, int] = field(default_factory=dict)


class _InstanceSet:
    """The instances of one window with capacities per class at every profiled clock of their TP."""

    def __init__(self, plan: WindowPlan, table: ProfileTable, classes: list[str]):
        self.plan = plan
        self.inst = plan.instances
        n, k = len(self.inst), len(classes)
        self.ids = [i.instance_id for i in self.inst]
        self.tp = np.array([i.tp for i in self.inst], dtype=np.int64)
        self.top = np.array([table.top_clock(i.tp) for i in self.inst], dtype=np.int64)
        self.serves = np.zeros((n, k), dtype=bool)
        cidx = {c: j for j, c in enumerate(classes)}
        for a, i in enumerate(self.inst):
            for c in i.classes:
                if c in cidx:
                    self.serves[a, cidx[c]] = True
        self._cap: dict[tuple[int, int], np.ndarray] = {}
        self.table, self.classes = table, classes
        self.cap_top = np.stack([self.cap(a, int(self.top[a])) for a in range(n)]) if n else np.zeros((0, k))
        order = list(plan.pools)
        self.pool_idx = np.array([order.index(i.pool) for i in self.inst], dtype=np.int64)
        self.pools = order

    def cap(self, a: int, clock: int) -> np.ndarray:
        key = (int(self.tp[a]), int(clock))
        if key not in self._cap:
            self._cap[key] = np.array([self.table.capacity(c, key[0], key[1]) for c in self.classes])
        return self._cap[key]

    def util(self, a: int, clock: int, loads: np.ndarray) -> float:
        cap = self.cap(a, clock)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(loads > 0, loads / cap, 0.0)
        return float(u.sum())


def _route(pred: np.ndarray, iset: _InstanceSet, classes: list[str], rng: np.random.Generator) -> np.ndarray:
    """Instance (local index) for each request by predicted class, weighted by planned load."""
    out = np.empty(pred.size, dtype=np.int64)
    largest = len(iset.pools) - 1
    for c in np.unique(pred):
        sel = np.flatnonzero(pred == c)
        cand = np.flatnonzero(iset.serves[:, c])
        if cand.size == 0:  # no pool serves the predicted class: the pool of the largest requests,
            cand = np.flatnonzero(iset.pool_idx == largest)
        if cand.size == 0:  # else any instance that can serve it within its SLO, else any instance
            cand = np.flatnonzero(iset.cap_top[:, c] > 0)
        if cand.size == 0:
            cand = np.arange(len(iset.inst))
        w = np.array([max(iset.inst[a].max_load_rps, 1e-9) for a in cand])
        cum = np.cumsum(w) / w.sum()
        out[sel] = cand[np.minimum(np.searchsorted(cum, rng.random(sel.size), side="right"), cand.size - 1)]
    return out


def assign(trace: pd.DataFrame, plans: list[WindowPlan], table: ProfileTable, classes: list[str],
           params: ClusterParams) -> Assignment:
    """Run the cluster model over the trace (see the module docstring)."""
    rng = np.random.default_rng(params.seed)
    t = trace["t_s"].to_numpy()
    true_c = trace["cls"].to_numpy().astype(np.int64)
    pred_c = trace["pred_cls"].to_numpy().astype(np.int64)
    n_req, k = t.size, len(classes)
    row = np.full(n_req, -1, dtype=np.int64)
    moved = np.zeros(n_req, dtype=bool)
    reordered = np.zeros(n_req, dtype=bool)
    counters = dict(clock_raises=0, clock_changes=0, moved=0, dropped=0, reordered=0, mispredicted=int((true_c != pred_c).sum()))
    tick_rows: list[tuple] = []
    load_rows: list[np.ndarray] = []
    win_rows: list[dict] = []
    last_clock: dict[str, int] = {}
    ticks_per_window = max(1, int(round(params.window_s / params.tick_s)))
    tick_s = params.window_s / ticks_per_window
    prev_plan: WindowPlan | None = None
    bounds = np.searchsorted(t, np.arange(len(plans) + 1) * params.window_s, side="left")
    bounds[-1] = n_req
    for w, plan in enumerate(plans):
        iset = _InstanceSet(plan, table, classes)
        a0, a1 = bounds[w], bounds[w + 1]
        win_rows.append(_transitions(w, prev_plan, plan, params))
        prev_plan = plan
        if a1 > a0 and not plan.instances:
            continue  # nothing to serve on: every request of the window is dropped
        local = _route(pred_c[a0:a1], iset, classes, rng) if a1 > a0 else np.zeros(0, dtype=np.int64)
        tb = np.searchsorted(t[a0:a1], w * params.window_s + np.arange(ticks_per_window + 1) * tick_s) + a0
        tb[-1] = a1
        n_inst = len(plan.instances)
        for j in range(ticks_per_window):
            b0, b1 = tb[j], tb[j + 1]
            li = local[b0 - a0:b1 - a0]
            tc = true_c[b0:b1]
            loads = np.bincount(li * k + tc, minlength=n_inst * k).reshape(n_inst, k) / tick_s
            misfit = ~iset.serves[li, tc]
            reordered[b0:b1] = misfit
            counters["reordered"] += int(misfit.sum())
            clocks = np.empty(n_inst, dtype=np.int64)
            util = np.empty(n_inst)
            for a in range(n_inst):
                f = table.nearest_clock(int(iset.tp[a]), plan.instances[a].clock_for_load(float(loads[a].sum())))
                u = iset.util(a, f, loads[a])
                if u > 1.0 and f != iset.top[a]:
                    f = int(iset.top[a])
                    u = iset.util(a, f, loads[a])
                    counters["clock_raises"] += 1
                clocks[a], util[a] = f, u
            over = np.flatnonzero(util > 1.0 + 1e-9)
            if over.size:
                li = li.copy()
                _relieve(over, li, tc, b0, t, loads, clocks, util, iset, tick_s, moved, counters)
                local[b0 - a0:b1 - a0] = li
            base = len(tick_rows)
            for a in range(n_inst):
                iid = iset.ids[a]
                prev = last_clock.get(iid, int(clocks[a]))
                if prev != clocks[a]:
                    counters["clock_changes"] += 1
                last_clock[iid] = int(clocks[a])
                tick_rows.append((w, w * ticks_per_window + j, iid, plan.instances[a].pool, int(iset.tp[a]),
                                  int(clocks[a]), prev, float(util[a])))
                load_rows.append(loads[a])
            ok = li >= 0
            seg = np.arange(b0, b1)
            row[seg[ok]] = base + li[ok]
    ticks = pd.DataFrame(tick_rows, columns=["window", "tick", "instance_id", "pool", "tp", "clock_mhz",
                                             "prev_clock_mhz", "util"])
    lm = np.array(load_rows).reshape(-1, k) if load_rows else np.zeros((0, k))
    for j, c in enumerate(classes):
        ticks[f"load_{c}"] = lm[:, j]
    ticks.attrs["tick_s"] = tick_s
    counters["dropped"] = int((row < 0).sum())  # by the fast path, and windows with no instance
    return Assignment(row=row, moved=moved, reordered=reordered, ticks=ticks,
                      windows=pd.DataFrame(win_rows), classes=classes, counters=counters)


def _relieve(over, li, tc, b0, t, loads, clocks, util, iset: _InstanceSet, tick_s, moved, counters) -> None:
    """Move or drop requests from overloaded instances until each has u ≤ 1 (steps 3 and 4). ``li``
    (instance per request of the tick, -1 = dropped), ``loads``, ``clocks`` and ``util`` are updated
    in place."""
    drops: list[int] = []
    n_inst = len(iset.inst)
    largest = len(iset.pools) - 1
    for a in over:
        idx = np.flatnonzero(li == a)
        cap = iset.cap(a, int(clocks[a]))
        # mispredicted (not served here) first, then the latest arrivals: the not-yet-started ones
        key = np.where(iset.serves[a, tc[idx]], 0, 1)
        order = idx[np.lexsort((-t[b0 + idx], -key))]
        with np.errstate(divide="ignore"):
            contrib = 1.0 / (tick_s * cap[tc[order]])
        # requests this instance cannot serve within their SLO at all must go; then enough of the
        # rest, in order, to bring the utilisation down to 1
        cannot = ~np.isfinite(contrib)
        rest = order[~cannot]
        need = float(contrib[~cannot].sum()) - 1.0
        n_out = int(np.searchsorted(np.cumsum(contrib[~cannot]), need - 1e-12, side="left")) + 1 if need > 0 else 0
        take = np.concatenate([order[cannot], rest[:min(n_out, rest.size)]])
        for q in take:
            c = int(tc[q])
            own_pools = np.flatnonzero(iset.serves[:, c])
            prefs = [np.setdiff1d(own_pools, [a]),
                     np.setdiff1d(np.flatnonzero(iset.pool_idx == iset.pool_idx[a]), [a]),
                     np.setdiff1d(np.flatnonzero(iset.pool_idx == largest), [a])]
            placed = False
            for cand in prefs:
                if cand.size == 0:
                    continue
                top_caps = iset.cap_top[cand, c]
                room = (1.0 - np.array([iset.util(b, int(iset.top[b]), loads[b]) for b in cand])) * tick_s * top_caps
                best = int(np.argmax(room))
                if room[best] >= 1.0:
                    b = int(cand[best])
                    li[q] = b
                    loads[b, c] += 1.0 / tick_s
                    f = int(clocks[b])
                    u = iset.util(b, f, loads[b])
                    if u > 1.0 and f != iset.top[b]:
                        clocks[b] = iset.top[b]
                        counters["clock_raises"] += 1
                        u = iset.util(b, int(iset.top[b]), loads[b])
                    util[b] = u
                    moved[b0 + q] = True
                    counters["moved"] += 1
                    placed = True
                    break
            if not placed:
                drops.append(int(q))
            loads[a, c] -= 1.0 / tick_s
        util[a] = iset.util(a, int(clocks[a]), loads[a])
    if drops:
        li[np.array(drops)] = -1


def _transitions(w: int, prev: WindowPlan | None, plan: WindowPlan, params: ClusterParams) -> dict:
    """Servers on, started, drained and instances re-sharded when ``plan`` replaces ``prev``."""
    started = drained = reshards = 0
    for p in set(plan.pools) | set(prev.pools if prev else ()):
        now = plan.servers(p) if p in plan.pools else 0
        before = (prev.servers(p) if p in prev.pools else 0) if prev is not None else now
        started += max(0, now - before)
        drained += max(0, before - now)
        if prev is not None:
            tp_now = sorted(i.tp for i in plan.instances if i.pool == p)
            tp_before = sorted(i.tp for i in prev.instances if i.pool == p)
            if tp_now != tp_before and min(now, before) > 0:
                # instances on servers that stay change TP: every instance of the smaller layout
                reshards += min(len(tp_now), len(tp_before))
    gpus = sum(i.tp for i in plan.instances)
    return dict(window=w, servers_on=plan.total_servers(), servers_started=started, servers_drained=drained,
                reshards=reshards, gpus_in_instances=gpus)
