"""`dynamo plan`, `plan show`, `schedule publish`, `carbon load`: the library twins from the command line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from dynamo_pipeline.cli import main
from dynamo_pipeline.schedules.store import read_from_dir

KEY = "c" * 32


def run(args, db_url, env=None):
    return CliRunner().invoke(main, ["--db", db_url, *args], catch_exceptions=False, env=env)


def test_plan_show_publish_and_carbon(db_url, tmp_path, monkeypatch):
    assert run(["db", "upgrade"], db_url).exit_code == 0
    csv = tmp_path / "carbon.csv"
    csv.write_text("hour,g_per_kwh\n2026-11-24T16:00:00Z,250\n2026-11-24T17:00:00Z,300\n")
    r = run(["carbon", "load", str(csv)], db_url)
    assert r.exit_code == 0 and "loaded 2 hours" in r.output
    r = run(["plan", "--level", "cluster", "--synthetic", "--load-rps", "1.0", "--servers", "40",
             "--at", "2026-11-24T16:10:00Z"], db_url)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{"):])
    assert out["status"] == "optimal" and out["solver"] == "highs" and "loads from: constant" in out["flags"]
    r = run(["plan", "show"], db_url)
    assert r.exit_code == 0 and '"level": "cluster"' in r.output and "freq_mhz" in r.output
    r = run(["schedule", "publish", "--synthetic", "--dir", str(tmp_path / "s")], db_url)
    assert r.exit_code == 2 and "DYNAMO_SCHEDULE_KEY is not set" in r.output
    monkeypatch.setenv("DYNAMO_SCHEDULE_KEY", KEY)
    r = run(["schedule", "publish", "--synthetic", "--dir", str(tmp_path / "s")], db_url)
    assert r.exit_code == 0 and "published schedule version 1" in r.output, r.output
    assert read_from_dir(tmp_path / "s", verify_key=KEY.encode()).schedule.plan_id == 1


def test_plan_without_loads_or_profile_says_what_to_do(db_url, tmp_path):
    run(["db", "upgrade"], db_url)
    r = CliRunner().invoke(main, ["--db", db_url, "plan", "--synthetic"])
    assert r.exit_code == 2 and "--load-rps" in r.output
    r = CliRunner().invoke(main, ["--db", db_url, "plan", "--load-rps", "1"])
    assert r.exit_code == 2 and "--synthetic" in r.output and "dynamo profile" in r.output
