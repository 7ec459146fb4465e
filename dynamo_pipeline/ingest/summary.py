"""One-screen, human-readable summaries of ingest runs and window loads (used by the CLI and demo)."""

from __future__ import annotations

import pandas as pd

from dynamo_pipeline.ingest.load import IngestSummary


def format_summary(runs: list[IngestSummary], max_reasons: int = 8) -> str:
    lines = [f"{'file':40s} {'read':>10s} {'new':>10s} {'present':>10s} {'quarant.':>9s} {'k rows/s':>9s}"]
    for r in runs:
        name = r.source if len(r.source) <= 40 else "…" + r.source[-39:]
        lines.append(f"{name:40s} {r.rows_read:10,d} {r.rows_inserted:10,d} {r.rows_already_present:10,d} "
                     f"{r.rows_quarantined:9,d} {r.rows_per_s / 1e3:9.0f}")
    tot = dict(read=sum(r.rows_read for r in runs), stored=sum(r.rows_stored for r in runs),
               q=sum(r.rows_quarantined for r in runs))
    ok = "balanced" if tot["read"] == tot["stored"] + tot["q"] else "NOT BALANCED"
    lines.append(f"total: {tot['read']:,} rows read = {tot['stored']:,} stored + {tot['q']:,} quarantined ({ok})")
    reasons: dict[str, int] = {}
    for r in runs:
        for k, v in r.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    if reasons:
        lines.append("quarantine reasons (see `dynamo quarantine`):")
        for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:max_reasons]:
            lines.append(f"  {v:8,d}  {k}")
    return "\n".join(lines)


def format_windows(df: pd.DataFrame, classes: list[str], value: str = "arrivals", max_rows: int = 30) -> str:
    """Windows × classes as a fixed-width table, one block per model."""
    if df.empty:
        return "no window loads yet: run `dynamo ingest LOGS...` first"
    out = []
    for model, g in df.groupby("model", sort=True):
        t = g.pivot_table(index="window_start", columns="class_name", values=value, aggfunc="sum", fill_value=0)
        t = t.reindex(columns=classes, fill_value=0)
        t["total"] = t.sum(axis=1)
        t.index = t.index.strftime("%Y-%m-%d %H:%M")
        fmt = (lambda x: f"{x:.2f}") if value == "rate_rps" else (lambda x: f"{int(x)}")
        shown = t if len(t) <= max_rows else pd.concat([t.head(max_rows // 2), t.tail(max_rows // 2)])
        out.append(f"model {model}: {value} per {int(g.window_s.iloc[0])} s window (UTC), {len(t)} windows")
        out.append(shown.to_string(float_format=None, formatters={c: fmt for c in shown.columns}))
        if len(t) > max_rows:
            out.append(f"… {len(t) - max_rows} windows not shown (use --since/--until or --csv)")
    return "\n".join(out)
