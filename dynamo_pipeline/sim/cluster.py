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
instances' planned load of that class (:meth:`~.plan.InstancePlan.weight`). Per tick and instance, the model then applies the fast
path of the paper when an instance is overloaded (utilisation u = Σ_c λ_c / capacity_c > 1 —
typically because requests were predicted shorter than they are, or the forecast was low), in this
order, each step counted:

1. **re-order** the queue by deadline: every request whose true class the instance does not serve is
   counted as re-ordered (its deadline, not its arrival, sets its place);
2. **raise the clock** to the fallback (top) clock;
3. **move** not-yet-started requests — mispredicted ones first, then others spread evenly over the
   tick (the overload lasts all of it) — to an
   instance with headroom: the pool of their true class, another instance of the same pool, the
   pool of the largest requests, or any instance that can serve their class within its SLO;
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


#: The golden ratio's fractional part: i · GOLDEN mod 1 spreads any first n of i = 0, 1, … evenly.
GOLDEN = (5 ** 0.5 - 1) / 2


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
        # per instance: its TP's profiled clocks (padded with the top clock), capacities at each,
        # and its clock table as (max rps, clock index) bands ending with (inf, fallback)
        n_f = max((len(table.clocks[int(t)]) for t in self.tp), default=1)
        self.clk = np.zeros((n, n_f), dtype=np.int64)
        self.caps = np.zeros((n, n_f, k))
        n_b = max((len(i.clock_table) for i in self.inst), default=0) + 1
        self.band_rps = np.full((n, n_b), np.inf)
        self.band_fi = np.zeros((n, n_b), dtype=np.int64)
        self.top_fi = np.zeros(n, dtype=np.int64)
        for a, i in enumerate(self.inst):
            cl = table.clocks[i.tp]
            self.clk[a, :] = cl[-1]
            self.clk[a, :len(cl)] = cl
            for fi in range(n_f):
                self.caps[a, fi] = self.cap(a, int(self.clk[a, fi]))
            self.top_fi[a] = len(cl) - 1
            fidx = {f: j for j, f in enumerate(cl)}
            bands = list(i.clock_table) if i.clock_table else []
            for j, (rps, clock) in enumerate(bands):
                self.band_rps[a, j] = rps
                self.band_fi[a, j] = fidx[table.nearest_clock(i.tp, clock)]
            last = i.fallback_clock_mhz if bands else i.clock_mhz
            self.band_fi[a, len(bands):] = fidx[table.nearest_clock(i.tp, last)]
            self.band_rps[a, len(bands):] = np.inf

    def clocks_for(self, loads: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Clock index each agent picks from its table for the observed loads, the utilisation at
        every profiled clock (instances × clocks) and at the picked one."""
        total = loads.sum(axis=1)
        band = (total[:, None] > self.band_rps).sum(axis=1)
        fi = self.band_fi[np.arange(len(total)), np.minimum(band, self.band_rps.shape[1] - 1)]
        lo = loads[:, None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            u_all = np.where(lo > 0, lo / self.caps, 0.0).sum(axis=2)
        return fi, u_all, u_all[np.arange(len(total)), fi]

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
        w = np.array([max(iset.inst[a].weight(classes[c]), 1e-9) for a in cand])
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
    tick_parts: list[tuple] = []
    n_rows = 0
    win_rows: list[dict] = []
    key_of: dict[str, int] = {}       # instance id → integer key, stable across windows
    pool_of: list[str] = []
    last_clock = np.full(0, -1, dtype=np.int64)
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
        for i in plan.instances:
            if i.instance_id not in key_of:
                key_of[i.instance_id] = len(key_of)
                pool_of.append(i.pool)
        keys = np.array([key_of[i.instance_id] for i in plan.instances], dtype=np.int64)
        if last_clock.size < len(key_of):
            last_clock = np.concatenate([last_clock, np.full(len(key_of) - last_clock.size, -1, dtype=np.int64)])
        for j in range(ticks_per_window):
            b0, b1 = tb[j], tb[j + 1]
            li = local[b0 - a0:b1 - a0]
            tc = true_c[b0:b1]
            loads = np.bincount(li * k + tc, minlength=n_inst * k).reshape(n_inst, k) / tick_s
            misfit = ~iset.serves[li, tc]
            reordered[b0:b1] = misfit
            counters["reordered"] += int(misfit.sum())
            fi, u_all, util = iset.clocks_for(loads)
            raise_ = (util > 1.0) & (fi != iset.top_fi)
            if raise_.any():
                counters["clock_raises"] += int(raise_.sum())
                fi = np.where(raise_, iset.top_fi, fi)
                util = u_all[np.arange(n_inst), fi]
            clocks = iset.clk[np.arange(n_inst), fi]
            over = np.flatnonzero(util > 1.0 + 1e-9)
            if over.size:
                li = li.copy()
                _relieve(over, li, tc, b0, t, loads, clocks, util, iset, tick_s, moved, counters)
                local[b0 - a0:b1 - a0] = li
            base = n_rows
            prev = last_clock[keys]
            prev = np.where(prev < 0, clocks, prev)
            counters["clock_changes"] += int((prev != clocks).sum())
            last_clock[keys] = clocks
            tick_parts.append((np.full(n_inst, w), np.full(n_inst, w * ticks_per_window + j), keys, iset.tp,
                               clocks.copy(), prev, util.copy(), loads))
            n_rows += n_inst
            ok = li >= 0
            seg = np.arange(b0, b1)
            row[seg[ok]] = base + li[ok]
    cols = ["window", "tick", "key", "tp", "clock_mhz", "prev_clock_mhz", "util"]
    if tick_parts:
        ticks = pd.DataFrame({c: np.concatenate([p[m] for p in tick_parts]) for m, c in enumerate(cols)})
        lm = np.concatenate([p[7] for p in tick_parts])
    else:
        ticks = pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in cols})
        lm = np.zeros((0, k))
    ids = np.array(list(key_of), dtype=object)
    ticks["instance_id"] = ids[ticks["key"].to_numpy()] if len(ids) else np.zeros(0, dtype=object)
    ticks["pool"] = np.array(pool_of, dtype=object)[ticks["key"].to_numpy()] if pool_of else np.zeros(0, dtype=object)
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
    largest = len(iset.pools) - 1
    for a in over:
        idx = np.flatnonzero(li == a)
        cap = iset.cap(a, int(clocks[a]))
        # mispredicted (not served here) first, then the rest spread evenly over the tick: the
        # overload lasts the whole tick, so the requests beyond capacity arrive all through it (taking
        # the tick's latest arrivals instead would leave the instance twice its capacity in the first
        # half of a tick and idle in the second)
        key = np.where(iset.serves[a, tc[idx]], 0, 1)
        idx = idx[np.argsort(t[b0 + idx], kind="stable")]
        spread = np.modf(np.arange(idx.size) * GOLDEN)[0]   # any prefix in this order is evenly spread
        order = idx[np.lexsort((spread, -key))]
        with np.errstate(divide="ignore"):
            contrib = 1.0 / (tick_s * cap[tc[order]])
        # requests this instance cannot serve within their SLO at all must go; then enough of the
        # rest, in order, to bring the utilisation down to 1
        cannot = ~np.isfinite(contrib)
        rest = order[~cannot]
        need = float(contrib[~cannot].sum()) - 1.0
        n_out = int(np.searchsorted(np.cumsum(contrib[~cannot]), need - 1e-12, side="left")) + 1 if need > 0 else 0
        take = np.concatenate([order[cannot], rest[:min(n_out, rest.size)]])
        tcs = tc[take]
        for c in np.unique(tcs):
            left = take[tcs == c]
            loads[a, c] -= left.size / tick_s
            prefs = (iset.serves[:, c], iset.pool_idx == iset.pool_idx[a], iset.pool_idx == largest,
                     np.ones(len(iset.inst), dtype=bool))
            for mask in prefs:
                cand = np.flatnonzero(mask)
                cand = cand[(cand != a) & (iset.cap_top[cand, c] > 0)]
                if cand.size == 0 or left.size == 0:
                    continue
                with np.errstate(divide="ignore", invalid="ignore"):
                    u_top = np.where(loads[cand] > 0, loads[cand] / iset.cap_top[cand], 0.0).sum(axis=1)
                room = np.floor((1.0 - u_top) * tick_s * iset.cap_top[cand, c] + 1e-9).astype(np.int64)
                for j in np.argsort(-room, kind="stable"):
                    take_n = int(min(room[j], left.size))
                    if take_n <= 0:
                        break
                    b = int(cand[j])
                    li[left[:take_n]] = b
                    moved[b0 + left[:take_n]] = True
                    counters["moved"] += take_n
                    loads[b, c] += take_n / tick_s
                    u = iset.util(b, int(clocks[b]), loads[b])
                    if u > 1.0 and clocks[b] != iset.top[b]:
                        clocks[b] = iset.top[b]
                        counters["clock_raises"] += 1
                        u = iset.util(b, int(iset.top[b]), loads[b])
                    util[b] = u
                    left = left[take_n:]
            drops.extend(int(q) for q in left)
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
