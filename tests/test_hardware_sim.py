"""The simulated inference server as an engine (roofline latency, KV capacity, determinism, the
serve API) and the `sim` GPU backend (clocks, power, energy counter), plus the backend registry."""

from __future__ import annotations

import numpy as np
import pytest

from dynamo_pipeline.hardware import (
    GPUNotFoundError,
    HardwareError,
    SimBackend,
    SimServer,
    UnsupportedClockError,
    make_backend,
)
from dynamo_pipeline.hardware.cards import MODELS, GPUS, fitting_tp, kv_capacity_tokens


@pytest.fixture(scope="module")
def server():
    return SimServer("Llama-2-70B", "H100-SXM")


def _stream(n=300, rate=2.0, seed=0, inp=(100, 400), out=(20, 90)):
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.exponential(1 / rate, n)), rng.integers(*inp, n), rng.integers(*out, n))


def test_same_requests_give_identical_results(server):
    a, i, o = _stream()
    r1, r2 = server.serve(a, i, o, 1400, 4), server.serve(a, i, o, 1400, 4)
    assert np.array_equal(r1.ttft_s, r2.ttft_s) and r1.energy_j == r2.energy_j


def test_single_request_matches_prefill_plus_decode_iterations(server):
    r = server.serve([0.0], [1000], [11], 1980, 8)
    pre, _, _ = server.prefill_s([1000], 8, 1980)
    assert r.ttft_s[0] == pytest.approx(pre)
    # 10 decode iterations after the first token; each at least the weight read time
    w_s = MODELS["Llama-2-70B"].weight_bytes / 8 / (GPUS["H100-SXM"].hbm_bytes_per_s * server.p.hbm_efficiency)
    assert w_s < r.tbt_s[0] < 2 * w_s
    assert r.finish_s[0] == pytest.approx(pre + 10 * r.tbt_s[0])


def test_prefill_scales_with_one_over_clock_and_decode_does_not(server):
    (t_lo, comp_lo, mem_lo), (t_hi, comp_hi, mem_hi) = (server.prefill_s([4096], 8, f) for f in (990, 1980))
    assert comp_lo / comp_hi == pytest.approx(2.0)  # compute time scales with 1/clock
    assert 1.5 < t_lo / t_hi < 2.0  # the all-reduce and launch overheads do not
    d = [server.serve(np.zeros(8), np.full(8, 100), np.full(8, 300), f, 8).tbt_s.mean() for f in (1600, 1980)]
    assert d[0] / d[1] == pytest.approx(1.0, abs=0.03)  # memory bound


def test_more_gpus_cut_latency(server):
    a, i, o = _stream(rate=1.0)
    tbt = [np.nanmean(server.serve(a, i, o, 1980, tp).tbt_s) for tp in (2, 4, 8)]
    assert tbt[0] > tbt[1] > tbt[2]


def test_kv_cache_capacity_limits_the_batch(server):
    cap = kv_capacity_tokens(MODELS["Llama-2-70B"], GPUS["H100-SXM"], 2)
    n = 40
    per = cap // 10  # ten requests fill the cache
    r = server.serve(np.zeros(n), np.full(n, per - 500), np.full(n, 500), 1980, 2)
    # requests run in waves of at most ten: the last wave starts after three waves finished
    first_tokens = np.sort(r.finish_s - 499 * r.tbt_s)
    assert len(np.unique(np.round(first_tokens, 6))) >= 4
    with pytest.raises(ValueError, match="does not fit the KV cache"):
        server.serve([0.0], [cap], [10], 1980, 2)


def test_idle_gaps_draw_idle_power_only(server):
    r = server.serve([0.0, 1000.0], [10, 10], [2, 2], 1980, 2)
    assert r.power_w == pytest.approx(2 * 75.0, rel=0.01)


def test_fitting_tp_follows_memory():
    h100 = GPUS["H100-SXM"]
    assert fitting_tp(MODELS["Llama-2-70B"], h100) == [2, 4, 8]
    assert fitting_tp(MODELS["Llama-2-70B"], h100, (1, 2)) == [2]  # 138 GB of weights never fit one GPU
    assert fitting_tp(MODELS["Llama-2-13B"], h100, (1, 2)) == [1, 2]


def test_sim_backend_locks_only_supported_clocks_and_integrates_energy():
    b = make_backend("sim", gpu="H100-SXM", n_gpus=2)
    assert isinstance(b, SimBackend) and len(b.list_gpus()) == 2
    assert b.current_clock_mhz(0) == 1980
    b.set_locked_clocks(0, 1200)
    assert b.current_clock_mhz(0) == 1200
    with pytest.raises(UnsupportedClockError, match="nearest supported"):
        b.set_locked_clocks(0, 1207)
    with pytest.raises(GPUNotFoundError):
        b.power_w(2)
    b.set_utilisation(1, 1.0)
    e0 = b.energy_j(0), b.energy_j(1)
    b.advance(10.0)
    assert b.energy_j(0) - e0[0] == pytest.approx(750.0)  # idle 75 W x 10 s
    assert b.energy_j(1) - e0[1] == pytest.approx(10 * b.power_w(1)) and b.power_w(1) > 75
    b.reset_locked_clocks(0)
    assert b.current_clock_mhz(0) == 1980


def test_unknown_backend_names_the_choices():
    with pytest.raises(HardwareError, match="nvml.*sim"):
        make_backend("rocm")
