"""Profiling jobs: the CSV contract, provenance in the store, resuming after an interruption, the
`dynamo profile` command, and the real-engine runner (httpx against a local fake OpenAI-compatible
server, clocks and energy through the nvml backend over a fake pynvml)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dynamo_pipeline.cli import main
from dynamo_pipeline.hardware.nvml import NvmlBackend
from dynamo_pipeline.profiling import PROFILE_COLUMNS, SimRunner, read_rows, run_profile
from dynamo_pipeline.profiling.http_runner import EngineError, HttpRunner
from tests.test_hardware_nvml import FakeNVML

SMALL = dict(tp_degrees=(4,), clocks_mhz=(1200, 1980), classes=("SS", "LM"), n_requests=120, min_duration_s=0,
             progress=False)


def test_writes_the_csv_contract_and_the_store_with_provenance(store, settings, tmp_path):
    res = run_profile(SimRunner("Llama-2-70B", "H100-SXM"), settings, "H100-SXM", "Llama-2-70B",
                      root=tmp_path / "profiles", store=store, **SMALL)
    df = pd.read_csv(tmp_path / "profiles/H100-SXM/Llama-2-70B.csv")
    assert list(df.columns) == PROFILE_COLUMNS
    assert len(df) == 2 * 2 * 11 and res.points_measured == 44
    assert (df.source == "sim").all() and df.versions.str.contains("numpy=").all()
    # every (class, tp) has the same load levels at every clock: a rectangular grid
    assert df.groupby(["class_name", "freq_mhz"]).load_rps.apply(tuple).nunique() == 2
    stored = read_rows(store, "H100-SXM", "Llama-2-70B")
    pd.testing.assert_frame_equal(stored[["class_name", "tp", "freq_mhz"]], df[["class_name", "tp", "freq_mhz"]])
    np.testing.assert_allclose(stored.energy_per_request_j, df.energy_per_request_j, rtol=1e-5)
    assert not (tmp_path / "profiles/H100-SXM/Llama-2-70B.csv.partial").exists()


class _Interrupt(Exception):
    pass


class _KilledRunner(SimRunner):
    """Stops (as a killed job would) after ``budget`` grid points. The load-level probes come
    first and run at the top clock only; the grid starts with the lowest clock."""

    def __init__(self, budget: int):
        super().__init__("Llama-2-70B", "H100-SXM")
        self.budget, self.grid_calls = budget, 0

    def measure(self, tp, clock_mhz, arrival_s, input_tokens, output_tokens):
        if clock_mhz != 1980 or self.grid_calls:
            self.grid_calls += 1
            if self.grid_calls > self.budget:
                raise _Interrupt()
        return super().measure(tp, clock_mhz, arrival_s, input_tokens, output_tokens)


def test_resumes_after_an_interruption_without_redoing_points(tmp_path, settings, store):
    root = tmp_path / "p"
    full = run_profile(SimRunner("Llama-2-70B", "H100-SXM"), settings, "H100-SXM", "Llama-2-70B",
                       root=tmp_path / "ref", **SMALL).frame
    with pytest.raises(_Interrupt):
        run_profile(_KilledRunner(budget=17), settings, "H100-SXM", "Llama-2-70B", root=root, store=store, **SMALL)
    partial = pd.read_csv(root / "H100-SXM/Llama-2-70B.csv.partial")
    assert len(partial) == 17
    res = run_profile(SimRunner("Llama-2-70B", "H100-SXM"), settings, "H100-SXM", "Llama-2-70B", root=root,
                      store=store, **SMALL)
    assert res.points_skipped == len(partial) and res.points_measured == 44 - len(partial)
    pd.testing.assert_frame_equal(res.frame.drop(columns="versions"), full.drop(columns="versions"))
    assert len(read_rows(store, "H100-SXM", "Llama-2-70B", res.run_id)) == 44


def test_cli_profile_writes_the_file(tmp_path):
    db = f"sqlite:///{tmp_path / 'd.db'}"
    r = CliRunner().invoke(main, ["--db", db, "db", "upgrade"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["--db", db, "profile", "--model", "Llama-2-13B", "--root", str(tmp_path / "pr"),
                                  "--tp", "2", "--clocks", "1980", "--classes", "SS", "--requests", "80",
                                  "--min-duration", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "11 points (11 measured, 0 resumed)" in r.output
    assert (tmp_path / "pr/H100-SXM/Llama-2-13B.csv").exists()


def test_min_duration_exposes_a_rate_the_instance_cannot_sustain():
    """SM on TP4 at 1.6 GHz and 28.5 requests/s: 600 requests (21 s of arrivals) end before the
    queue grows, and its P99 TTFT looks well within the 400 ms SLO; five minutes of the same stream
    show that the instance does not keep up. 10% less load is sustained either way."""
    from dynamo_pipeline.config import load_settings
    from dynamo_pipeline.profiling import grid as G

    assert G.stream_size(28.5, 600, 300.0) == 8550 and G.stream_size(0.5, 600, 300.0) == 600
    runner, bins = SimRunner("Llama-2-70B", "H100-SXM"), G.class_bins(load_settings(None))["SM"]

    def p99_ttft(rate: float, min_duration_s: float) -> float:
        n = G.stream_size(rate, 600, min_duration_s)
        return runner.measure(4, 1600, *G.draw_requests(bins, rate, n, G.point_rng(0, "SM", 4, 0)))["ttft_p99_s"]

    assert p99_ttft(28.5, 0) < 0.2 < 1.0 < p99_ttft(28.5, 300)
    assert p99_ttft(25.6, 300) < 0.2


def test_cli_nvml_without_url_says_what_is_needed(tmp_path):
    r = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 'd.db'}", "profile", "--backend", "nvml",
                                  "--no-store"])
    assert r.exit_code == 2 and "--url" in r.output and "--gpus" in r.output


# ---- the real-engine runner against a fake OpenAI-compatible server -----------------------------

class _Engine(BaseHTTPRequestHandler):
    token_s = 0.002
    seen: list[dict] = []

    def log_message(self, *a):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Engine.seen.append(body)
        if body["model"] != "served-70b":
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": "model not found"}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        time.sleep(0.01)  # "prefill"
        for k in range(body["max_tokens"]):
            chunk = {"choices": [{"index": 0, "text": f" t{k}"}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(self.token_s)
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def engine_url():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Engine.seen.clear()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


class _CountingNVML(FakeNVML):
    """Energy counters that advance 300 J per GPU per read, so the measured energy is known."""

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self.energy_mj[h.i] += 300_000
        return self.energy_mj[h.i]


def test_http_runner_locks_clocks_streams_requests_and_reads_energy(engine_url):
    nv = _CountingNVML()
    runner = HttpRunner(NvmlBackend(nvml=nv), engine_url, "served-70b", [0, 1], model_card="Llama-2-70B",
                        gpu_card="H100-SXM", settle_s=0.0)
    arrival = np.array([0.0, 0.02, 0.05, 0.06])
    m = runner.measure(2, 1605, arrival, np.array([50, 60, 70, 80]), np.array([5, 6, 7, 8]))
    # clocks were locked on both GPUs and reset afterwards
    assert ("nvmlDeviceSetGpuLockedClocks",) in nv.calls and nv.locked == {}
    assert [b["max_tokens"] for b in sorted(_Engine.seen, key=lambda b: b["max_tokens"])] == [5, 6, 7, 8]
    assert all(b["stream"] and b["ignore_eos"] for b in _Engine.seen)
    assert 0.01 <= m["ttft_p50_s"] < 0.5
    assert 0.002 <= m["tbt_p50_s"] < 0.1
    assert m["energy_per_request_j"] == pytest.approx(2 * 300.0 / 4)  # one read before, one after
    assert m["power_w"] > 0 and m["throughput_rps"] > 0


def test_http_runner_reports_engine_errors_and_resets_clocks(engine_url):
    nv = _CountingNVML()
    runner = HttpRunner(NvmlBackend(nvml=nv), engine_url, "wrong-name", [0], model_card="Llama-2-70B",
                        gpu_card="H100-SXM", settle_s=0.0)
    with pytest.raises(EngineError, match="answered 404.*served model name"):
        runner.measure(1, 1980, np.array([0.0]), np.array([10]), np.array([2]))
    assert nv.locked == {}


def test_http_runner_unreachable_engine_says_how_to_start_it():
    nv = _CountingNVML()
    runner = HttpRunner(NvmlBackend(nvml=nv), "http://127.0.0.1:9", "m", [0], model_card="Llama-2-70B",
                        gpu_card="H100-SXM", settle_s=0.0, timeout_s=2)
    with pytest.raises(EngineError, match="vllm serve"):
        runner.measure(1, 1980, np.array([0.0]), np.array([10]), np.array([2]))
    assert nv.locked == {}



def _trace_file(tmp_path, rows):
    """A small trace CSV (t_s, input_tokens, output_tokens) the trace reader accepts."""
    path = tmp_path / "trace.csv"
    pd.DataFrame(rows, columns=["t_s", "input_tokens", "output_tokens"]).to_csv(path, index=False)
    return path


def test_lengths_from_a_trace_are_drawn_as_pairs_of_the_class():
    """With length pools, a class's requests are (input, output) pairs of the trace's requests of
    that class, kept together; a class with fewer than MIN_POOL requests keeps the bins' draw."""
    from dynamo_pipeline.config import load_settings
    from dynamo_pipeline.profiling import grid as G
    from dynamo_pipeline.sim.trace import true_classes

    s = load_settings(None)
    names = s.classes.names()
    ss = [(100, 10), (200, 20), (300, 30)] * 10                  # 30 short requests
    mm = [(1500, 300)] * (G.MIN_POOL - 1)                         # too few for a pool
    trace = pd.DataFrame(ss + mm, columns=["input_tokens", "output_tokens"])
    trace["cls"] = true_classes(trace, s)
    pools = G.LengthPools.from_trace(trace, s, "t.csv")
    assert pools.counts() == {"SS": 30}
    bins = G.class_bins(s)
    rng = np.random.default_rng(1)
    _, inp, out = G.draw_requests(bins["SS"], 5.0, 500, rng, pools)
    assert set(zip(inp.tolist(), out.tolist())) == {(100, 10), (200, 20), (300, 30)}
    _, inp, out = G.draw_requests(bins["MM"], 5.0, 500, rng, pools)
    assert inp.min() >= bins["MM"].input_lo and inp.max() < bins["MM"].input_hi
    assert len(set(inp.tolist())) > 100                            # log-uniform, not the one pair
    assert pools.fingerprint() != G.LengthPools.from_trace(trace.iloc[1:], s, "t.csv").fingerprint()
    assert names[trace["cls"][0]] == "SS"


def test_profile_with_a_workloads_lengths_measures_its_requests(tmp_path, settings):
    """SS requests of 12 output tokens (the bins draw 8–64, 27 on average) leave each request
    fewer decode steps: less energy per request than the log-uniform profile at the same points;
    the CSV says which lengths it was measured with, and the run's spec names the pools."""
    from dynamo_pipeline.profiling import grid as G

    small = dict(SMALL, classes=("SS",), clocks_mhz=(1980,))
    trace = pd.DataFrame({"input_tokens": [120] * 40, "output_tokens": [12] * 40, "cls": [0] * 40})
    pools = G.LengthPools.from_trace(trace, settings, "short.csv")
    base = run_profile(SimRunner("Llama-2-70B", "H100-SXM"), settings, "H100-SXM", "Llama-2-70B",
                       root=tmp_path / "a", **small).frame
    light = run_profile(SimRunner("Llama-2-70B", "H100-SXM"), settings, "H100-SXM", "Llama-2-70B",
                        root=tmp_path / "b", lengths=pools, **small).frame
    assert light.versions.str.endswith(" lengths=short.csv").all() and not base.versions.str.contains("lengths=").any()
    assert light.energy_per_request_j.median() < 0.8 * base.energy_per_request_j.median()


def test_cli_profile_lengths_from(tmp_path):
    db = f"sqlite:///{tmp_path / 'd.db'}"
    args = ["--db", db, "profile", "--no-store", "--root", str(tmp_path / "pr"), "--tp", "4", "--clocks", "1980",
            "--classes", "SS", "--requests", "60", "--min-duration", "0", "--no-progress"]
    r = CliRunner().invoke(main, args + ["--lengths-from", str(tmp_path / "missing.csv")])
    assert r.exit_code != 0 and "missing.csv does not exist" in r.output
    few = _trace_file(tmp_path, [(i, 100, 10) for i in range(5)])
    r = CliRunner().invoke(main, args + ["--lengths-from", str(few)])
    assert r.exit_code != 0 and "no class has 20 requests" in r.output
    path = _trace_file(tmp_path, [(i * 0.5, 100 + i, 10) for i in range(30)])
    r = CliRunner().invoke(main, args + ["--lengths-from", str(path)])
    assert r.exit_code == 0, r.output
    assert "lengths from" in r.output and "SS 30" in r.output and "log-uniform for SM" in r.output
    df = pd.read_csv(tmp_path / "pr/H100-SXM/Llama-2-70B.csv")
    assert df.versions.str.endswith(" lengths=trace.csv").all()
