"""Fast mode (profile lookups) against detailed mode (the simulated server) on both Azure hours.

Each hour is replayed with two profiles: the shipped one (lengths log-uniform within each class's
bins) and the one measured with the hour's own request lengths (``profiles/workloads/``). GPU energy
agrees within 10% with either. P99 TTFT and TBT can only agree when the profile was measured on the
lengths being served: with the shipped profile fast mode's chat P99s are 24% / 42% above the
engine's (ML outputs average 618 tokens in the profile, 426 in the hour). With the chat hour's own
lengths they agree within 15%. The code hour still does not: it arrives in bursts (variance/mean of
per-second arrival counts 13, against 1.4 for chat) that profiles measured on Poisson streams do not
see, and a per-tick lookup cannot either (``xfail``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.profiling import ProfileError, load_profile
from dynamo_pipeline.sim.evaluate import scale_for_servers
from dynamo_pipeline.sim.replay import simulate
from dynamo_pipeline.sim.trace import predict_classes, read_trace_file

from tests.conftest import ROOT, SAMPLES

_CACHE: dict[tuple[str, str], tuple[dict, dict]] = {}
WORKLOADS = ROOT / "profiles" / "workloads"


def _profile(kind: str, hour: str) -> pd.DataFrame:
    s = load_settings(None)
    if kind == "workload":
        path = WORKLOADS / f"azure-{hour}-2023" / s.hardware.gpu / f"{s.hardware.model}.csv"
        if not Path(path).exists():
            pytest.skip(f"no workload profile {path}")
        return pd.read_csv(path)
    try:
        return load_profile(s.hardware.gpu, s.hardware.model)
    except ProfileError as e:
        pytest.skip(f"no shipped profile: {e}")


def _both_modes(hour: str, kind: str) -> tuple[dict, dict]:
    """dynamollm on the first 20 minutes of the hour, scaled to 4 servers, in both modes."""
    if (hour, kind) not in _CACHE:
        s = load_settings(None)
        profile = _profile(kind, hour)
        df = read_trace_file(SAMPLES / f"AzureLLMInferenceTrace_{hour}.csv.gz", s)
        part = df[df["t_s"] < 1200].reset_index(drop=True)
        part.attrs.update(df.attrs)
        trace, _ = scale_for_servers(part, s, profile, target_servers=4)
        trace = predict_classes(trace, s)
        _CACHE[(hour, kind)] = tuple(simulate(trace, "dynamollm", s, profile, mode=m).summary
                                     for m in ("fast", "detailed"))
    return _CACHE[(hour, kind)]


@pytest.mark.parametrize("kind", ["shipped", "workload"])
@pytest.mark.parametrize("hour", ["conv", "code"])
def test_gpu_energy_agrees_within_10_percent(hour, kind):
    fast, det = _both_modes(hour, kind)
    assert fast["requests"] == det["requests"] and fast["dropped"] == det["dropped"]
    assert fast["gpu_energy_kwh"] == pytest.approx(det["gpu_energy_kwh"], rel=0.10)


@pytest.mark.parametrize("hour", [
    "conv",
    pytest.param("code", marks=pytest.mark.xfail(strict=True, reason=(
        "not met: the code hour arrives in bursts (variance/mean of per-second counts 13) and the engine "
        "queues prefills behind them (P99 TTFT and TBT several times fast mode's); profiles measured on "
        "Poisson streams, looked up per 60 s tick, do not see them"))),
])
def test_p99_latency_agrees_within_15_percent_with_the_workloads_lengths(hour):
    fast, det = _both_modes(hour, "workload")
    assert fast["ttft_p99_s"] == pytest.approx(det["ttft_p99_s"], rel=0.15)
    assert fast["tbt_p99_s"] == pytest.approx(det["tbt_p99_s"], rel=0.15)


def test_p99_latency_with_the_bins_lengths_overstates_the_chat_hours(hour="conv"):
    """Why the workload's lengths matter: the shipped profile's classes are heavier than the chat
    hour's requests, so fast mode's P99s are above the engine's on them."""
    fast, det = _both_modes(hour, "shipped")
    assert fast["ttft_p99_s"] > 1.15 * det["ttft_p99_s"] and fast["tbt_p99_s"] > 1.15 * det["tbt_p99_s"]
