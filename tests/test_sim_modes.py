"""Fast mode (profile lookups) against detailed mode (the simulated server) on both Azure hours,
with the shipped profile: GPU energy within 10% (measured: within 5%); P99 TTFT and TBT within 15%
is the goal, not met yet (see ``test_p99_latency_agrees``)."""

from __future__ import annotations

import pytest

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.profiling import ProfileError, load_profile
from dynamo_pipeline.sim.evaluate import scale_for_servers
from dynamo_pipeline.sim.replay import simulate
from dynamo_pipeline.sim.trace import predict_classes, read_trace_file

from tests.conftest import SAMPLES

_CACHE: dict[str, tuple[dict, dict]] = {}


@pytest.fixture(scope="module")
def profile():
    s = load_settings(None)
    try:
        return load_profile(s.hardware.gpu, s.hardware.model)
    except ProfileError as e:
        pytest.skip(f"no shipped profile: {e}")


def _both_modes(hour: str, profile) -> tuple[dict, dict]:
    """dynamollm on the first 20 minutes of the hour, scaled to 4 servers, in both modes."""
    if hour not in _CACHE:
        s = load_settings(None)
        df = read_trace_file(SAMPLES / f"AzureLLMInferenceTrace_{hour}.csv.gz", s)
        part = df[df["t_s"] < 1200].reset_index(drop=True)
        part.attrs.update(df.attrs)
        trace, _ = scale_for_servers(part, s, profile, target_servers=4)
        trace = predict_classes(trace, s)
        _CACHE[hour] = tuple(simulate(trace, "dynamollm", s, profile, mode=m).summary for m in ("fast", "detailed"))
    return _CACHE[hour]


@pytest.mark.parametrize("hour", ["conv", "code"])
def test_gpu_energy_agrees_within_10_percent(hour, profile):
    fast, det = _both_modes(hour, profile)
    assert fast["requests"] == det["requests"] and fast["dropped"] == det["dropped"]
    assert fast["gpu_energy_kwh"] == pytest.approx(det["gpu_energy_kwh"], rel=0.10)


@pytest.mark.xfail(strict=True, reason=(
    "not met yet: chat: fast mode's P99 TTFT is 24% and its P99 TBT 42% above the engine's (the profile's "
    "log-uniform lengths within a class's bins are heavier than the hour's: ML outputs average 618 tokens "
    "in the profile, 426 in the trace); code: the hour arrives in bursts (variance/mean of per-second "
    "counts 13, against 1.4 for chat) that Poisson-measured profiles do not see, and the engine's P99 "
    "TTFT is 1.9 s where fast mode says 0.57 s — in detailed mode even singlepool misses its SLOs there"))
@pytest.mark.parametrize("hour", ["conv", "code"])
def test_p99_latency_agrees_within_15_percent(hour, profile):
    fast, det = _both_modes(hour, profile)
    assert fast["ttft_p99_s"] == pytest.approx(det["ttft_p99_s"], rel=0.15)
    assert fast["tbt_p99_s"] == pytest.approx(det["tbt_p99_s"], rel=0.15)
