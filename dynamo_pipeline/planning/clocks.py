"""Instance level: the clock table an agent uses to pick its GPU clock by observed load.

For one (class, TP) the table has one band per profile load level ℓ: up to ℓ rps, run at the
lowest-energy clock whose P99 TTFT and TBT at ℓ meet the class's SLO according to the profile
(equal load, so lowest power = lowest energy per request). Adjacent bands with the same clock are
merged. Loads above the last band — where no clock meets the SLO in the profile — get the fallback
(top) clock, which the schedule carries separately. The table is computed from the profile frame
alone and published with the plan (``schedules/build.py``), so the agent decides every few seconds
without asking the planner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from dynamo_pipeline.planning.problem import PlanningError, cell_table, mixed_cells


def clock_table(profiles: pd.DataFrame, cls: str, tp: int, slo: tuple[float, float],
                max_load_rps: float | None = None) -> list[tuple[float, int]]:
    """[(max_load_rps, clock_mhz), …] with increasing loads; empty when no clock meets the SLO at
    any load (the agent then runs the fallback clock). ``max_load_rps`` cuts the table at the most
    load the instance may be given (the last band is then capped at that load)."""
    rows = profiles[(profiles["class_name"] == cls) & (profiles["tp"] == tp)]
    if rows.empty:
        raise PlanningError(f"the profile has no rows for class {cls} at TP{tp}; profile that configuration first")
    ok = rows[(rows["ttft_p99_s"] <= slo[0]) & (rows["tbt_p99_s"] <= slo[1]) & (rows["load_rps"] > 0)]
    bands: list[tuple[float, int]] = []
    for load, group in ok.groupby("load_rps", sort=True):
        best = group.sort_values(["power_w", "freq_mhz"]).iloc[0]
        bands.append((float(load), int(best["freq_mhz"])))
    # a band is only safe if every lower load level was also covered: stop at the first gap
    levels = sorted(rows["load_rps"].unique())
    safe: list[tuple[float, int]] = []
    covered = {b[0]: b for b in bands}
    for lv in levels:
        if lv <= 0:
            continue
        if lv not in covered:
            break
        safe.append(covered[lv])
    if max_load_rps is not None:
        cut = [b for b in safe if b[0] < max_load_rps]
        above = [b for b in safe if b[0] >= max_load_rps]
        safe = cut + ([(float(max_load_rps), above[0][1])] if above else [])
    merged: list[tuple[float, int]] = []
    for load, clock in safe:
        if merged and merged[-1][1] == clock:
            merged[-1] = (load, clock)
        else:
            merged.append((load, clock))
    return merged


def mix_clock_table(profiles: pd.DataFrame, mix: Sequence[tuple[str, float]], tp: int,
                    slo: Mapping[str, tuple[float, float]], levels: int = 8, idle_w: float = 75.0) -> list[tuple[float, int]]:
    """[(max_load_rps, clock_mhz), …] for a mixed instance serving ``mix`` (class, share) at TP
    ``tp``: up to each load level, the clock whose cheapest level at or above it draws the least
    power while every class of the mix meets its SLO (utilisation ≤ 1)."""
    cells = mixed_cells(cell_table(profiles), slo, dict(mix), "mix", (tp,), levels, idle_w=idle_w)
    if not cells:
        raise PlanningError(f"no clock at TP{tp} serves the mix {dict(mix)} within its SLOs; profile that configuration")
    bands: list[tuple[float, int]] = []
    for x in sorted({c.load_rps for c in cells}):
        best = min(((min((c for c in cells if c.freq_mhz == f and c.load_rps >= x - 1e-12), key=lambda c: c.load_rps), f)
                    for f in sorted({c.freq_mhz for c in cells if c.load_rps >= x - 1e-12})),
                   key=lambda cf: (cf[0].power_w, cf[1]))
        if bands and bands[-1][1] == best[1]:
            bands[-1] = (x, best[1])
        else:
            bands.append((x, best[1]))
    return bands
