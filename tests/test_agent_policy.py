"""The clock decision and the engine-metrics reader, without I/O."""

from __future__ import annotations

import math

import pytest

from dynamo_pipeline.agent.engine_metrics import EngineSample, parse, quantile, sample
from dynamo_pipeline.agent.policy import ClockPolicy, PolicyParams
from tests.agent_schedules import make_schedule

P = PolicyParams(min_clock_change_s=30, down_hysteresis=0.2, down_hold_s=10, fast_waiting_max=8,
                 fast_slo_fraction=0.9, fast_release_s=5, ttft_slo_s=0.4, tbt_slo_s=0.1)


def _s(load=math.nan, waiting=0, ttft=math.nan, tbt=math.nan, past=0):
    return EngineSample(running=1, waiting=waiting, load_rps=load, ttft_p99_s=ttft, tbt_p99_s=tbt, past_predicted=past)


def _policy():
    inst = make_schedule(1, ["n1"]).instances_on("n1")[0]  # bands: <=2 rps 1200, <=4 1410, <=6 1800, else 1980
    return ClockPolicy(inst, 1980, P, current_mhz=1200, last_change_s=0.0)


@pytest.mark.parametrize("sig,reason", [
    (_s(waiting=9), "queue"), (_s(ttft=0.37), "ttft"), (_s(tbt=0.095), "tbt"), (_s(past=1), "past_predicted")])
def test_fast_path_goes_to_top_clock_at_once_ignoring_min_interval(sig, reason):
    p = _policy()
    d = p.step(1.0, sig)  # 1 s after the last change: the load path would have to wait 30 s
    assert d.clock_mhz == 1980 and d.started is not None and d.started.reasons[0].startswith(reason)


def test_below_slo_fraction_is_not_a_fast_path_signal():
    p = _policy()
    assert p.step(100.0, _s(load=1.0, ttft=0.35, tbt=0.08, waiting=8)).clock_mhz is None


def test_fast_path_comes_down_only_after_release_hold_and_records_duration():
    p = _policy()
    p.step(10.0, _s(waiting=20))
    assert p.step(12.0, _s(load=1.0)).clock_mhz is None  # clear, but not for 5 s yet
    assert p.step(14.0, _s(load=1.0, waiting=30)).clock_mhz is None  # signal again: hold restarts
    assert p.step(18.0, _s(load=1.0)).ended is None  # clear from 18 s on
    assert p.step(22.9, _s(load=1.0)).ended is None
    d = p.step(23.0, _s(load=1.0))
    assert d.clock_mhz == 1200 and d.ended is not None
    assert d.ended.duration_s == pytest.approx(13.0) and d.ended.reasons == ("queue",)


def test_load_up_waits_for_min_interval_then_follows_table():
    p = _policy()
    assert p.step(10.0, _s(load=5.0)).clock_mhz is None  # 10 s < 30 s since last change
    assert p.step(31.0, _s(load=5.0)).clock_mhz == 1800


def test_load_down_needs_hysteresis_margin_and_hold():
    p = _policy()
    p.current_mhz, p.last_change_s = 1800, 0.0
    # 3.5 rps asks for 1410, but 3.5/(1-0.2)=4.375 still asks for 1800: inside the hysteresis band
    assert p.step(100.0, _s(load=3.5)).clock_mhz is None
    assert p.step(200.0, _s(load=3.5)).clock_mhz is None
    assert p.step(300.0, _s(load=3.0)).clock_mhz is None  # 3.0/0.8=3.75 -> 1410: starts the hold
    assert p.step(305.0, _s(load=3.0)).clock_mhz is None
    assert p.step(310.5, _s(load=3.0)).clock_mhz == 1410


def test_no_observation_keeps_the_clock():
    p = _policy()
    assert p.step(100.0, None).clock_mhz is None
    assert p.step(200.0, _s()).clock_mhz is None


VLLM = """# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{model_name="m"}} 7.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{model_name="m"}} {waiting}
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{le="0.1",model_name="m"}} {t1}
vllm:time_to_first_token_seconds_bucket{{le="0.5",model_name="m"}} {t2}
vllm:time_to_first_token_seconds_bucket{{le="+Inf",model_name="m"}} {t2}
vllm:time_to_first_token_seconds_count{{model_name="m"}} {t2}
vllm:time_to_first_token_seconds_sum{{model_name="m"}} 1.0
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{{le="0.05",model_name="m"}} 100.0
vllm:time_per_output_token_seconds_bucket{{le="0.1",model_name="m"}} 100.0
vllm:time_per_output_token_seconds_bucket{{le="+Inf",model_name="m"}} 100.0
vllm:time_per_output_token_seconds_count{{model_name="m"}} 100.0
vllm:time_per_output_token_seconds_sum{{model_name="m"}} 2.0
"""


def test_reads_vllm_gauges_and_interval_histograms():
    a = parse(VLLM.format(waiting=3, t1=90, t2=100), at_s=0.0)
    b = parse(VLLM.format(waiting=12, t1=90, t2=120), at_s=10.0)  # 20 new requests, all slow (0.1..0.5 s)
    s = sample(b, a)
    assert (s.running, s.waiting) == (7.0, 12.0)
    assert s.load_rps == pytest.approx(2.0)
    assert 0.1 < s.ttft_p99_s <= 0.5  # only this interval's requests count, not the 90 fast ones before
    assert math.isnan(s.tbt_p99_s)  # no new output tokens in the interval
    assert math.isnan(sample(a, None).load_rps)


def test_quantile_interpolates_like_prometheus():
    assert quantile([(0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)], 0.5) == pytest.approx(0.1)
    assert quantile([(0.1, 0.0), (0.2, 100.0), (math.inf, 100.0)], 0.99) == pytest.approx(0.199)
    assert math.isnan(quantile([], 0.99))


def test_reader_measures_load_over_a_sliding_window_not_the_last_scrape(monkeypatch):
    from dynamo_pipeline.agent import engine_metrics as em

    counts = iter([0, 10, 10, 20, 20, 30, 30, 40])  # 10 arrivals every 2 s, scraped every 1 s
    times = iter(range(8))
    r = em.EngineMetricsReader("http://127.0.0.1:1/metrics", window_s=4.0)
    monkeypatch.setattr(r, "_get", lambda: VLLM.format(waiting=0, t1=0, t2=next(counts)))
    monkeypatch.setattr(em.time, "monotonic", lambda: float(next(times)))
    loads = [r.read().load_rps for _ in range(8)]
    assert math.isnan(loads[0])
    # a 1 s window would swing between 0 and 10 rps; a 4 s window reads the true 5 rps once full
    assert loads[4:] == [pytest.approx(5.0)] * 4
