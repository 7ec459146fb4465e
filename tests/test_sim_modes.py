"""Fast mode (profile lookups) and detailed mode (the simulated server) agree on both Azure hours:
within 10% on GPU energy and 15% on P99 TTFT and TBT, with the shipped profile."""

from __future__ import annotations

import pytest

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.profiling import ProfileError, load_profile
from dynamo_pipeline.sim.evaluate import scale_for_servers
from dynamo_pipeline.sim.replay import simulate
from dynamo_pipeline.sim.trace import predict_classes, read_trace_file

from tests.conftest import SAMPLES


@pytest.fixture(scope="module")
def profile():
    s = load_settings(None)
    try:
        return load_profile(s.hardware.gpu, s.hardware.model)
    except ProfileError as e:
        pytest.skip(f"no shipped profile: {e}")


@pytest.mark.parametrize("hour", ["conv", "code"])
def test_fast_and_detailed_modes_agree(hour, profile):
    s = load_settings(None)
    df = read_trace_file(SAMPLES / f"AzureLLMInferenceTrace_{hour}.csv.gz", s)
    part = df[df["t_s"] < 600].reset_index(drop=True)  # 10 minutes: two windows, twenty ticks
    part.attrs.update(df.attrs)
    trace, _ = scale_for_servers(part, s, profile, target_servers=2)
    trace = predict_classes(trace, s)
    fast = simulate(trace, "singlepool", s, profile, mode="fast").summary
    det = simulate(trace, "singlepool", s, profile, mode="detailed").summary
    assert fast["gpu_energy_kwh"] == pytest.approx(det["gpu_energy_kwh"], rel=0.10)
    assert fast["ttft_p99_s"] == pytest.approx(det["ttft_p99_s"], rel=0.15)
    assert fast["tbt_p99_s"] == pytest.approx(det["tbt_p99_s"], rel=0.15)
