"""The `dynamo` command: each subcommand runs its library twin and errors say what to do."""

from __future__ import annotations

from click.testing import CliRunner

from dynamo_pipeline.cli import main
from tests.conftest import SAMPLES


def run(args, db_url):
    return CliRunner().invoke(main, ["--db", db_url, *args], catch_exceptions=False)


def test_ingest_windows_classes_quarantine_runs(db_url, tmp_path):
    assert run(["db", "upgrade"], db_url).exit_code == 0
    r = run(["ingest", "--no-progress", str(SAMPLES)], db_url)
    assert r.exit_code == 0, r.output
    assert "28,185 rows read = 28,185 stored + 0 quarantined (balanced)" in r.output
    r = run(["windows"], db_url)
    assert r.exit_code == 0 and "model Llama-2-70B: arrivals per 300 s window" in r.output and "12 windows" in r.output
    r = run(["windows", "--csv", "--since", "2023-11-16T18:30Z", "--until", "2023-11-16T18:40Z"], db_url)
    body = r.output.strip().splitlines()
    assert body[0].startswith("model,class_name,window_s,window_start_s") and len(body) == 1 + 17  # 18:30 has no SL request
    r = run(["classes", "fit"], db_url)
    assert r.exit_code == 0 and "input_bins_tokens:" in r.output and "from 28,185 requests" in r.output
    assert "quarantine is empty" in run(["quarantine"], db_url).output
    assert "complete" in run(["runs"], db_url).output


def test_commands_refuse_an_unmigrated_store(db_url):
    r = CliRunner().invoke(main, ["--db", db_url, "windows"])
    assert r.exit_code == 2 and "run `dynamo db upgrade`" in r.output


def test_bad_config_exits_with_the_key_named(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window_s: 301\n")
    r = CliRunner().invoke(main, ["--config", str(cfg), "config", "show"])
    assert r.exit_code == 2 and "window_s" in r.output and "divide a day" in r.output


def test_config_show_prints_yaml(tmp_path):
    r = CliRunner().invoke(main, ["config", "show"])
    assert r.exit_code == 0 and "input_bins_tokens:" in r.output and "ttft_p99_s: 0.4" in r.output


def test_every_command_has_help():
    for args in (["--help"], ["ingest", "--help"], ["windows", "--help"], ["classes", "fit", "--help"],
                 ["db", "upgrade", "--help"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0 and "Usage:" in r.output
