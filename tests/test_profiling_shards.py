"""Profiling fan-out: a deterministic class split, shards that resume, and a merge that equals one
unsharded run and refuses a campaign with a missing shard (on SQLite and PostgreSQL)."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.profiling import SimRunner, read_rows, run_profile
from dynamo_pipeline.profiling.shards import ShardError, merge_shards, parse_shard, run_shard, shard_classes

GPU, MODEL = "H100-SXM", "Llama-2-70B"
CLASSES = ("SS", "ML", "LL")
GRID = dict(n_requests=40, tp_degrees=(8,), clocks_mhz=(1200, 1980), progress=False)
METRICS = ["throughput_rps", "ttft_p99_s", "power_w", "energy_per_request_j"]


def test_shard_split_is_deterministic_and_covers_every_class_once():
    names = load_settings(None).classes.names()
    parts = [shard_classes(names, k, 4) for k in range(1, 5)]
    assert sorted(c for p in parts for c in p) == sorted(names)
    assert parts == [shard_classes(names, k, 4) for k in range(1, 5)]
    with pytest.raises(ShardError, match="at most 9"):
        shard_classes(names, 1, 10)
    assert parse_shard("2/3") == (2, 3)
    with pytest.raises(ShardError):
        parse_shard("4/3")


def test_merged_shards_equal_one_unsharded_run(store, tmp_path):
    s = load_settings(None)
    runner = SimRunner(MODEL, GPU)
    for k in (1, 2):
        run_shard(runner, s, GPU, MODEL, "camp", k, 2, store=store, root=tmp_path, classes=CLASSES, **GRID)
    prov = merge_shards(store, GPU, MODEL, "camp", 2, root=tmp_path)
    whole = run_profile(runner, s, GPU, MODEL, root=tmp_path / "whole", classes=CLASSES, **GRID).frame
    merged = pd.read_csv(tmp_path / GPU / f"{MODEL}.csv")
    assert prov["points"] == len(whole) == len(merged) and sum(prov["shard_runs"].values()) == len(whole)
    pd.testing.assert_frame_equal(merged[METRICS], whole[METRICS], rtol=1e-5)
    stored = read_rows(store, GPU, MODEL)  # newest version is the merged one; shard rows are gone
    assert len(stored) == len(whole)
    assert read_rows(store, GPU, MODEL, "camp-s1of2").empty


def test_retried_shard_resumes_and_merge_refuses_missing_shard(store, tmp_path, monkeypatch):
    s = load_settings(None)
    runner = SimRunner(MODEL, GPU)
    calls = {"n": 0}
    real = runner.measure

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 74:  # after the load-level probes (40 calls), mid-grid
            raise RuntimeError("node lost")
        return real(*a, **k)

    monkeypatch.setattr(runner, "measure", flaky)
    with pytest.raises(RuntimeError):
        run_shard(runner, s, GPU, MODEL, "c2", 1, 2, store=store, root=tmp_path, classes=CLASSES, **GRID)
    with pytest.raises(ShardError, match="c2-s2of2"):
        merge_shards(store, GPU, MODEL, "c2", 2, root=tmp_path)
    again = run_shard(runner, s, GPU, MODEL, "c2", 1, 2, store=store, root=tmp_path, classes=CLASSES, **GRID)
    assert again.points_resumed > 0 and again.points_measured + again.points_resumed == again.points


def test_cli_shard_and_merge(tmp_path):
    from dynamo_pipeline.cli import main

    db = f"sqlite:///{tmp_path / 'd.db'}"
    cli = CliRunner()
    assert cli.invoke(main, ["--db", db, "db", "upgrade"]).exit_code == 0
    base = ["--db", db, "profile", "--backend", "sim", "--root", str(tmp_path), "--classes", "SS,LL",
            "--tp", "8", "--clocks", "1200,1980", "--requests", "30", "--no-progress", "--campaign", "cc"]
    r1 = cli.invoke(main, base + ["--shard", "1/2"])
    assert r1.exit_code == 0, r1.output
    r = cli.invoke(main, ["--db", db, "profile", "merge", "--campaign", "cc", "--shards", "2", "--root", str(tmp_path)])
    assert r.exit_code == 2 and "cc-s2of2" in r.output
    assert cli.invoke(main, base + ["--shard", "2/2"]).exit_code == 0
    r = cli.invoke(main, ["--db", db, "profile", "merge", "--campaign", "cc", "--shards", "2", "--root", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / GPU / f"{MODEL}.csv")) == 44
