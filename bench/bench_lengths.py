"""Output-length predictor: prompt-wise accuracy against the majority-class and input-length-only
baselines on the length pairs (ShareGPT, BWB, arXiv) and on AlpacaEval prompts (read in place from
../shared/data, never bundled), and prediction latency: one request at a time (p50/p99 on one core)
and batched (per request)."""

from __future__ import annotations

import os
import time

import numpy as np

from bench.common import timed
from dynamo_pipeline.config import load_settings
from dynamo_pipeline.lengths import LengthsError, evaluate
from dynamo_pipeline.lengths.data import load_alpaca_eval, load_length_pairs


def _latency(pred, df) -> None:
    rows = df.sample(2000, random_state=0)
    args = [(int(r.input_tokens), str(r.model), str(r.tenant), r.prompt_text or "") for r in rows.itertuples()]
    for a in args[:200]:  # warm caches
        pred.predict_one(*a)
    ts, cpu = [], []
    for a in args:
        c = time.thread_time()
        t = time.perf_counter()
        pred.predict_one(*a)
        ts.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    ts_ms, cpu_ms = np.array(ts) * 1e3, np.array(cpu) * 1e3
    batch = df.sample(min(len(df), 10_000), random_state=1)
    med, _ = timed(lambda: pred.predict(batch), repeat=3)
    print(f"  latency one request: wall p50 {np.percentile(ts_ms, 50):.3f} ms, p99 {np.percentile(ts_ms, 99):.3f} ms; "
          f"thread CPU p99 {np.percentile(cpu_ms, 99):.3f} ms (excludes time the shared machine ran others)")
    print(f"  batched {len(batch):,}: {med / len(batch) * 1e6:.1f} µs per request, "
          f"{np.percentile(ts_ms, 50) * 1e3 / (med / len(batch) * 1e6):.1f}× less than one at a time (p50)")


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    s = load_settings(None)
    for name, load in (("length_pairs", load_length_pairs), ("alpaca_eval", load_alpaca_eval)):
        try:
            df = load()
        except LengthsError as e:
            print(f"{name}: skipped ({e})")
            continue
        t = time.perf_counter()
        r = evaluate(df, s.classes, s.lengths, name)
        print(f"{name}: {len(df):,} rows, {df.prompt_id.nunique():,} prompts; prompt-wise split "
              f"{r['train_rows']:,} train / {r['test_rows']:,} test rows; bins {list(s.classes.output_bins_tokens)}; "
              f"train+evaluate {time.perf_counter() - t:.1f} s")
        for k in ("model", "majority", "input_length_only"):
            rec = " ".join(f"{c} {v:.3f}" for c, v in r[k]["recall"].items())
            print(f"  {k:18s} accuracy {r[k]['accuracy']:.4f}  recall {rec}")
        print(f"  confusion (rows true S/M/L): {r['model']['confusion']}")
        print(f"  token estimate median abs error: {r['token_median_abs_error']:.0f} tokens")
        _latency(r["predictor"], df)


if __name__ == "__main__":
    main()
