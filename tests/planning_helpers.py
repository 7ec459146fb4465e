"""Helpers for the planner's tests: random small profiles and brute force over instance counts."""

from __future__ import annotations

import itertools
import random

import pandas as pd

from dynamo_pipeline.planning.problem import PoolProblem, meets_slo
from dynamo_pipeline.planning.score import score_counts
from dynamo_pipeline.planning.testing import PROFILE_COLUMNS


def random_profile(rng: random.Random, classes=("SS", "LL"), tps=(2, 4), clocks=(1200, 1980), levels=2) -> pd.DataFrame:
    """Random but monotone-ish rows: some cells break the SLO (0.4 s / 0.1 s defaults)."""
    rows = []
    for c, t, f in itertools.product(classes, tps, clocks):
        for k in range(1, levels + 1):
            load = round(rng.uniform(0.3, 2.0) * t / 2 * k, 3)
            ttft = rng.uniform(0.05, 0.6)
            tbt = rng.uniform(0.02, 0.12)
            power = round(t * rng.uniform(100, 700) * (f / 1980) ** 1.5, 1)
            rows.append(("H100-SXM", "Llama-2-70B", c, t, f, load, load, ttft / 2, ttft, tbt / 2, tbt, power,
                         power / load, "sim", "test"))
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def brute_force(problem: PoolProblem) -> float | None:
    """The least objective over every plan that uses SLO-feasible profile cells (all of them, not
    only those the MILP keeps), covers every load and fits the budgets — among those that start at
    most planner.max_changes_per_window instances when any does (staggering); None when none exists."""
    keys = [(p, c, cell) for (p, c) in problem.demand for cell in problem.table.values()
            if cell.cls == c and meets_slo(cell, problem.slo[c])]
    total = sum(problem.budget.values())
    best = None
    best_bounded = None

    def rec(i: int, gpus: int, counts: dict) -> None:
        nonlocal best, best_bounded
        if i == len(keys):
            s = score_counts(problem, counts)
            if s.feasible and (best is None or s.objective < best - 1e-12):
                best = s.objective
            if s.feasible and not s.excess_changes and (best_bounded is None or s.objective < best_bounded - 1e-12):
                best_bounded = s.objective
            return
        tp = keys[i][2].tp
        for n in range(0, (total - gpus) // tp + 1):
            if n:
                counts[keys[i]] = n
            else:
                counts.pop(keys[i], None)
            rec(i + 1, gpus + n * tp, counts)
        counts.pop(keys[i], None)

    rec(0, 0, {})
    return best_bounded if best_bounded is not None else best
