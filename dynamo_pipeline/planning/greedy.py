"""Plans without the solver: the greedy fallback and the all-capacity plan for infeasible windows.

:func:`greedy_counts` covers each class's load with its cheapest cell per rps (the remainder with
the cheapest cell that covers it) and is used when the solver fails or runs out of time without an
incumbent. :func:`all_capacity_counts` is the plan for a window whose load is above what the GPU
budget can serve within the SLOs: every GPU in use, every instance at the top clock and its highest
SLO-feasible load, GPUs given one instance at a time to the class furthest behind its load; the
shortfall is what remains (DESIGN §4, "never no plan").
"""

from __future__ import annotations

import math

from dynamo_pipeline.planning.problem import Cell, PoolProblem, meets_slo


def _fits(problem: PoolProblem, used: dict[str, int], pool: str, gpus: int) -> bool:
    return all(used[b] + gpus <= problem.budget[b] for b in problem.budget if pool in problem.budget_pools(b))


def _take(problem: PoolProblem, used: dict[str, int], pool: str, gpus: int) -> None:
    for b in problem.budget:
        if pool in problem.budget_pools(b):
            used[b] += gpus


def greedy_counts(problem: PoolProblem) -> dict[tuple[str, str, Cell], int] | None:
    """A feasible plan by cost per rps, largest loads first; None when it does not fit the budget."""
    counts: dict[tuple[str, str, Cell], int] = {}
    used = {b: 0 for b in problem.budget}
    for (p, c), rps in sorted(problem.demand.items(), key=lambda kv: -kv[1]):
        cells = problem.cells.get(c, [])
        if rps <= 0:
            continue
        if not cells:
            return None
        best = min(cells, key=lambda x: problem.cell_cost(x) / x.load_rps)
        k = math.floor(rps / best.load_rps + 1e-9)
        rest = rps - k * best.load_rps
        plan = {best: k} if k else {}
        if rest > 1e-9:
            cover = [x for x in cells if x.load_rps >= rest - 1e-9]
            extra = min(cover, key=problem.cell_cost)
            plan[extra] = plan.get(extra, 0) + 1
        gpus = sum(cell.tp * n for cell, n in plan.items())
        if not _fits(problem, used, p, gpus):
            return None
        _take(problem, used, p, gpus)
        for cell, n in plan.items():
            counts[(p, c, cell)] = counts.get((p, c, cell), 0) + n
    return counts


def top_clock_cell(problem: PoolProblem, cls: str) -> Cell | None:
    """The top-clock cell of a class with the most load per GPU that meets the SLO; if none meets
    it at the top clock, the top-clock cell with the most load per GPU (the plan is flagged)."""
    top = [x for x in problem.table.values() if x.cls == cls and x.freq_mhz == problem.top_mhz and x.load_rps > 0]
    ok = [x for x in top if meets_slo(x, problem.slo.get(cls, (0.0, 0.0)))]
    pick = ok or top
    return max(pick, key=lambda x: (x.load_rps / x.tp, x.load_rps)) if pick else None


def all_capacity_counts(problem: PoolProblem) -> tuple[dict[tuple[str, str, Cell], int], list[str]]:
    """All GPUs at the top clock, one instance at a time to the class furthest behind; and flags."""
    flags: list[str] = []
    cell_of: dict[tuple[str, str], Cell] = {}
    for (p, c), rps in problem.demand.items():
        cell = top_clock_cell(problem, c)
        if cell is None:
            flags.append(f"class {c}: the profile has no row at the top clock; cannot serve it")
            continue
        if not meets_slo(cell, problem.slo.get(c, (0.0, 0.0))):
            flags.append(f"class {c}: no top-clock cell meets its SLO; using the one with the most load per GPU")
        cell_of[(p, c)] = cell
    counts: dict[tuple[str, str, Cell], int] = {}
    served = {d: 0.0 for d in cell_of}
    used = {b: 0 for b in problem.budget}
    while True:
        best, best_key = None, None
        for d, cell in cell_of.items():
            if not _fits(problem, used, d[0], cell.tp):
                continue
            rps = problem.demand[d]
            # furthest behind first; once all are covered, spread the rest in proportion to load
            key = ((rps - served[d]) / rps if rps > 0 else -math.inf, rps)
            if best_key is None or key > best_key:
                best, best_key = d, key
        if best is None:
            break
        cell = cell_of[best]
        counts[(best[0], best[1], cell)] = counts.get((best[0], best[1], cell), 0) + 1
        served[best] += cell.load_rps
        _take(problem, used, best[0], cell.tp)
    return counts, flags
