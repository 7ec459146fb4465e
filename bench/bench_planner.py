"""Planner speed: pool-level MILP (with reconfiguration terms) for 40 and 1,000 servers, and the
nightly 48-window cluster plan, on a synthetic 9-class × TP2/4/8 × 7-clock × 10-load profile.

Times include turning the profile frame into cells, building the PuLP model, solving with HiGHS and
extracting/scoring the plan. Each pool-level figure is the median over seeded random load
scenarios (30–70% of the fleet's capacity, against a previous plan at another load, so the
reconfiguration terms are live), once with one pool per class (each with its own GPU budget, as the
cluster level hands them over; solved pool by pool) and once with all classes in one pool under one
shared budget (one coupled MILP); the bare model (no previous plan) and CBC are measured in the same
run as references. The optimality gap HiGHS reports is printed as its maximum over the runs.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time

from bench.common import timed
from dynamo_pipeline.config import load_settings
from dynamo_pipeline.planning.cluster import densest_cells, nightly_plan
from dynamo_pipeline.planning.problem import pool_problem
from dynamo_pipeline.planning.solve import plan_pool
from dynamo_pipeline.planning.testing import CLASSES, synthetic_profile

RUNS = 15
SETTINGS = load_settings()
PROFILE = synthetic_profile()
DENSE = densest_cells(PROFILE, SETTINGS, CLASSES)


def scenario(rng: random.Random, servers: int, dense: dict | None = None) -> dict[str, float]:
    """Per-class loads that together need 30–70% of the GPUs at each class's densest SLO-feasible cell."""
    dense = dense or DENSE
    share = [rng.uniform(0.2, 1.0) for _ in CLASSES]
    gpus = rng.uniform(0.3, 0.7) * servers * 8
    return {c: gpus * s / sum(share) * dense[c][1] / dense[c][0] for c, s in zip(CLASSES, share)}


def per_pool_budget(loads: dict[str, float], servers: int) -> dict[str, int]:
    """One pool per class (DynamoLLM), each with 1.3x the servers its load needs at its densest cell,
    scaled so that the pools hold ``servers`` servers in all."""
    need = {c: loads[c] * DENSE[c][0] / DENSE[c][1] / 8 * 1.3 for c in CLASSES}
    k = servers / sum(need.values())
    out = {c: max(1, math.floor(need[c] * k)) for c in CLASSES}
    for c in sorted(CLASSES, key=lambda c: need[c] * k - math.floor(need[c] * k), reverse=True):
        if sum(out.values()) >= servers:
            break
        out[c] += 1
    return {c: 8 * n for c, n in out.items()}


def pool_level(profile, settings, servers: int, with_prev: bool, solver: str = "highs",
               shared: bool = False) -> tuple[float, list, list[str]]:
    """``shared``: one pool for all classes under one GPU budget (the harder, coupled model)."""
    rng = random.Random(servers)

    def problem(loads, prev=None):
        if shared:
            return pool_problem(profile, loads, settings, servers * 8, pools={"all": CLASSES}, prev=prev)
        return pool_problem(profile, loads, settings, per_pool_budget(loads, servers), prev=prev)

    cases = []
    for _ in range(RUNS):
        prev_plan = plan_pool(problem(scenario(rng, servers)), mip_rel_gap=settings.planner.mip_rel_gap,
                              time_limit_s=settings.planner.time_limit_s)
        cases.append((scenario(rng, servers), prev_plan.instances_by_pool_tp() if with_prev else None))
    times, plans = [], []
    for loads, prev in cases:
        t = time.perf_counter()
        prob = problem(loads, prev)
        plan = plan_pool(prob, solver=solver, time_limit_s=settings.planner.time_limit_s,
                         mip_rel_gap=settings.planner.mip_rel_gap)
        times.append(time.perf_counter() - t)
        plans.append(plan)
    statuses = sorted({p.status for p in plans})
    return statistics.median(times), plans, statuses


def main() -> None:
    settings, profile = SETTINGS, PROFILE
    print(f"settings: mip_rel_gap {settings.planner.mip_rel_gap}, time limit {settings.planner.time_limit_s} s; "
          f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"profile: {len(profile)} rows (9 classes x TP 2/4/8 x 7 clocks x 10 load levels)")
    for servers, shared in ((40, False), (1000, False), (40, True), (1000, True)):
        ref, ref_plans, _ = pool_level(profile, settings, servers, with_prev=False, shared=shared)
        med, plans, statuses = pool_level(profile, settings, servers, with_prev=True, shared=shared)
        gaps = [p.gap for p in plans if p.gap is not None]
        build = statistics.median(p.build_s for p in plans)
        solve = statistics.median(p.solve_s for p in plans)
        kind = "one shared pool and budget" if shared else "9 per-class pools"
        print(f"pool level, {kind}, {servers} servers ({servers * 8} GPUs), reconfiguration terms: median {med * 1000:.1f} ms "
              f"(model build {build * 1000:.1f} ms, HiGHS {solve * 1000:.1f} ms) over {RUNS} load scenarios; "
              f"statuses {statuses}; max gap {max(gaps) if gaps else 'n/a'}; "
              f"instances started median {statistics.median(p.score.instances_started for p in plans):.0f}")
        print(f"  bare (no previous plan): median {ref * 1000:.1f} ms; with/bare = {med / ref:.2f}x")
        if servers == 40:
            cbc, cbc_plans, _ = pool_level(profile, settings, servers, with_prev=True, solver="cbc", shared=shared)
            same = sum(abs(a.objective - b.objective) <= 1e-6 * max(1.0, abs(a.objective)) for a, b in zip(plans, cbc_plans))
            print(f"  CBC (fallback) on the same cases: median {cbc * 1000:.1f} ms; HiGHS/CBC = {med / cbc:.2f}x; "
                  f"same objective in {same}/{RUNS}")
    day = [{c: v * (0.55 + 0.45 * math.sin((i - 12) / 48 * 2 * math.pi)) for c, v in scenario(random.Random(7), 40).items()}
           for i in range(48)]
    holder = {}
    med, all_t = timed(lambda: holder.update(plans=nightly_plan(profile, day, settings, 40)), repeat=3)
    plans = holder["plans"]
    print(f"nightly plan, 48 half-hour windows, 40 servers, planner.pools={SETTINGS.planner.pools}: median {med:.2f} s "
          f"(runs {', '.join(f'{t:.2f}' for t in all_t)} s); servers per window {min(p.servers for p in plans)}–"
          f"{max(p.servers for p in plans)}; statuses {sorted({p.pool_plan.status for p in plans})}; "
          f"max gap {max((p.pool_plan.gap or 0.0) for p in plans):.2g}")
    big = [{c: v * 25 for c, v in w.items()} for w in day]
    med, all_t = timed(lambda: holder.update(plans=nightly_plan(profile, big, settings, 1000)), repeat=1)
    print(f"nightly plan, 48 windows, 1,000 servers: {med:.2f} s; statuses "
          f"{sorted({p.pool_plan.status for p in holder['plans']})}")


if __name__ == "__main__":
    main()
