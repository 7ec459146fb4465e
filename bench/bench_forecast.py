"""Load forecasts on ServeGen m-small and m-large: fit time for 9 classes × 14 days of 5-minute windows,
and rolling-origin backtests (last 4 days) of Prophet and every baseline at the day-ahead and
30-minute horizons: MAPE, sMAPE, pinball loss of the upper quantile and its coverage."""

from __future__ import annotations

import os
import time
import warnings

import pandas as pd

from bench.common import timed
from dynamo_pipeline.config import load_settings
from dynamo_pipeline.forecast import backtest_loads, forecast_loads, forecaster_names, score
from dynamo_pipeline.workload import servegen_window_loads

TEST_DAYS = int(os.environ.get("BENCH_FORECAST_TEST_DAYS", 4))
OUT = os.environ.get("BENCH_FORECAST_CSV")


def main() -> None:
    s = load_settings(None)
    warnings.simplefilter("ignore")
    loads = {m: servegen_window_loads(m, s.window_s, s.classes) for m in ("m-small", "m-large")}
    n_win = loads["m-small"].window_start_s.nunique()
    print(f"data: ServeGen m-small, m-large; {n_win} windows of {s.window_s} s × 9 classes each")
    for name in ("prophet", s.forecast.forecaster, s.forecast.intraday_forecaster):
        med, _ = timed(lambda: forecast_loads(loads["m-small"], s, horizon="day_ahead", forecaster=name), repeat=3)
        print(f"fit + day-ahead forecast, 9 classes × 14 days, {name:11s}: median {med:6.2f} s "
              f"(upper quantile calibrated on {s.forecast.calibration_s // 86400} held-out days)")
    names = [n for n in forecaster_names() if n != "auto"]
    frames = []
    for m, d in loads.items():
        t = time.perf_counter()
        frames.append(backtest_loads(d, s, names, TEST_DAYS, progress=False))
        print(f"backtest {m}: {len(names)} forecasters × 9 classes × {TEST_DAYS} days in {time.perf_counter() - t:.0f} s")
    detail = pd.concat(frames, ignore_index=True)
    if OUT:
        detail.to_csv(OUT, index=False)
    sc = score(detail, s.forecast.upper_quantile)
    print(f"\nupper quantile {s.forecast.upper_quantile}; MAPE/sMAPE/pinball in %, class-weighted by requests; "
          "coverage over all class windows")
    for (m, h), g in sc.groupby(["model", "horizon"]):
        best = g.mape_pct.min()
        print(f"\n{m} {h}")
        for r in g.sort_values("mape_pct").itertuples():
            print(f"  {r.forecaster:12s} MAPE {r.mape_pct:6.1f}  sMAPE {r.smape_pct:6.1f}  pinball {r.pinball_pct:6.1f}"
                  f"  coverage {r.coverage:.3f}  MAPE/best {r.mape_pct / best:.3f}")


if __name__ == "__main__":
    main()
