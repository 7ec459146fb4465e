"""SQL reports and the pipeline steps the DAGs call: each report on SQLite and PostgreSQL matches
numbers computed independently (pandas) from the raw tables; the steps behave as their CLI twins."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from dynamo_pipeline import pipeline
from dynamo_pipeline.cli import main
from dynamo_pipeline.config import ConfigError
from dynamo_pipeline.reports import ReportError, available, render, run_report

from tests.conftest import SAMPLES


@pytest.fixture
def loaded(store, settings, tmp_path):
    """The store with both bundled samples plus a file with two bad rows, ingested via the inbox step."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for f in SAMPLES.glob("*.csv.gz"):
        (inbox / f.name).write_bytes(f.read_bytes())
    head = gzip.open(SAMPLES / "AzureLLMInferenceTrace_code.csv.gz", "rt").read().splitlines()[:4]
    bad = head[:2] + ["2023-11-16 18:20:00.0000000,-5,10", "not a time,10,10"] + head[2:4]
    (inbox / "bad.csv").write_text("\n".join(bad) + "\n")
    out = pipeline.ingest_new_logs(settings, inbox)
    return store, settings, inbox, out


def _raw(store, table: str) -> pd.DataFrame:
    with store.engine.connect() as c:
        return pd.read_sql(text(f"SELECT * FROM {table}"), c)


def test_load_by_class_day_matches_the_window_loads_table(loaded):
    store, settings, _, _ = loaded
    got = run_report(store, "load_by_class_day")
    wl = _raw(store, "window_loads")
    wl["day_start_s"] = wl.window_start_s // 86400 * 86400
    want = wl.groupby(["day_start_s", "model", "class_name"], as_index=False).agg(
        arrivals=("arrivals", "sum"), output_tokens_sum=("output_tokens_sum", "sum"))
    m = got.merge(want, on=["day_start_s", "model", "class_name"], suffixes=("", "_want"))
    assert len(m) == len(want) == len(got) > 0
    assert (m.arrivals == m.arrivals_want).all() and (m.output_tokens_sum == m.output_tokens_sum_want).all()
    # and the window loads themselves equal the request log
    assert got.arrivals.sum() == len(_raw(store, "requests"))


def test_load_by_class_day_honours_the_half_open_range(loaded):
    store, _, _, _ = loaded
    day = int(datetime(2023, 11, 16, tzinfo=timezone.utc).timestamp())
    assert run_report(store, "load_by_class_day", day, day + 86400).arrivals.sum() > 0
    assert run_report(store, "load_by_class_day", day + 86400, day + 2 * 86400).empty
    assert run_report(store, "load_by_class_day", day - 86400, day).empty


def test_ingest_quality_and_quarantine_reasons_match_the_raw_tables(loaded):
    store, _, _, out = loaded
    q = run_report(store, "ingest_quality")
    runs = _raw(store, "ingest_runs")
    assert list(q.run_id) == sorted(runs.id)
    assert q.rows_quarantined.sum() == len(_raw(store, "quarantine")) == out["rows_quarantined"] == 2
    bad = q[q.source.str.endswith("bad.csv")].iloc[0]
    assert bad.quarantined_share == pytest.approx(2 / bad.rows_read)
    reasons = run_report(store, "quarantine_reasons")
    want = _raw(store, "quarantine").groupby("reason").size()
    assert reasons.groupby("reason").rows_quarantined.sum().to_dict() == want.to_dict()


def test_render_writes_csv_table_and_png(loaded, tmp_path):
    store, _, _, _ = loaded
    df = run_report(store, "load_by_class_day")
    assert pd.read_csv(render(df, "load_by_class_day", "csv", tmp_path / "a.csv")).arrivals.sum() == df.arrivals.sum()
    assert "2023-11-16" in render(df, "load_by_class_day", "table")
    png = render(df, "load_by_class_day", "png", tmp_path / "a.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ReportError, match="no report 'nope'"):
        run_report(store, "nope")


def test_runner_runs_any_new_sql_file_without_code_changes(store, tmp_path, monkeypatch):
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "runs_count.sql").write_text(
        "-- Runs\n-- uses :since_s only in a comment\nSELECT COUNT(*) AS n FROM ingest_runs\n")
    monkeypatch.setenv("DYNAMO_SQL_DIR", str(tmp_path / "sql"))
    assert available() == ["runs_count"]
    assert run_report(store, "runs_count").n.tolist() == [0]


def test_cli_report_prints_csv_and_lists_reports(loaded):
    store, settings, _, _ = loaded
    r = CliRunner().invoke(main, ["--db", settings.database_url, "report", "load_by_class_day", "--format", "csv",
                                  "--since", "2023-11-16", "--until", "2023-11-17"])
    assert r.exit_code == 0, r.output
    assert pd.read_csv(pd.io.common.StringIO(r.output)).arrivals.sum() == len(_raw(store, "requests"))
    r = CliRunner().invoke(main, ["--db", settings.database_url, "report", "--list"])
    assert r.exit_code == 0 and all(n in r.output for n in available())
    r = CliRunner().invoke(main, ["--db", settings.database_url, "report", "load_by_class_day", "--format", "png"])
    assert r.exit_code == 2 and "--out" in r.output


def test_ingest_new_logs_skips_files_already_loaded(loaded):
    _, settings, inbox, first = loaded
    assert len(first["files_ingested"]) == 3 and first["first_arrival_us"] < first["last_arrival_us"]
    again = pipeline.ingest_new_logs(settings, inbox)
    assert again["files_ingested"] == [] and again["files_seen"] == 3 and again["first_arrival_us"] is None
    with pytest.raises(FileNotFoundError, match="dynamo_inbox"):
        pipeline.ingest_new_logs(settings, inbox / "missing")


def test_refresh_windows_summarises_the_newest_window(loaded):
    store, settings, _, out = loaded
    res = pipeline.refresh_windows(settings, out["first_arrival_us"], out["last_arrival_us"])
    wl = _raw(store, "window_loads")
    newest = wl[wl.window_start_s == wl.window_start_s.max()]
    assert res["latest_window_start_s"] == newest.window_start_s.iloc[0]
    assert res["latest_arrivals"] == newest.arrivals.sum()
    # every configured class is reported, those without arrivals at 0 (the planner's observed load)
    per_class = res["latest_arrivals_per_class"]
    assert set(per_class) == set(settings.classes.names())
    assert per_class == {c: int(newest[newest.class_name == c].arrivals.sum()) for c in per_class}
    assert res["windows_stored"] == wl.window_start_s.nunique() and res["rows_written"] == len(wl)


def test_run_config_validates_params(settings, tmp_path):
    cfg = pipeline.run_config(settings, {"objective_weights": {"carbon": 2}, "slo_overrides": {"tbt_p99_s": 0.2}})
    assert cfg["objective_weights"] == {"energy": 0.0, "carbon": 2.0, "cost": 0.0}
    assert cfg["slo"] == {"ttft_p99_s": settings.slo.ttft_p99_s, "tbt_p99_s": 0.2}
    for bad, msg in [({"objective_weights": {"watts": 1}}, "unknown keys"),
                     ({"objective_weights": {"energy": 0}}, "at least one"),
                     ({"slo_overrides": {"ttft_p99_s": -1}}, "slo.ttft_p99_s"),
                     ({"whatif_trace": str(tmp_path / "none.csv")}, "does not exist")]:
        with pytest.raises(ConfigError, match=msg):
            pipeline.run_config(settings, bad)


def test_check_overrun_flags_runs_longer_than_the_window():
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert pipeline.check_overrun(t0, 300, t0 + timedelta(seconds=299))["overran"] is False
    late = pipeline.check_overrun(t0, 300, t0 + timedelta(seconds=301))
    assert late["overran"] is True and late["elapsed_s"] == 301


def test_cli_pipeline_twins_run_the_same_steps(loaded, tmp_path):
    _, settings, inbox, _ = loaded
    run = lambda *a: CliRunner().invoke(main, ["--db", settings.database_url, "pipeline", *a])  # noqa: E731
    r = run("ingest-new", str(inbox))
    assert r.exit_code == 0 and json.loads(r.output)["files_ingested"] == []
    r = run("reports", "--out", str(tmp_path / "rep"))
    assert r.exit_code == 0 and set(json.loads(r.output)["files"]) == set(available())
    r = run("config", '{"objective_weights": {"energy": -1}}')
    assert r.exit_code == 2 and "≥ 0" in r.output
    assert json.loads(run("overrun", "2000-01-01T00:00Z").output)["overran"] is True
    assert json.loads(run("windows").output)["latest_arrivals"] > 0
