"""The schedule document: validation, canonical signing, tampered and foreign schedules rejected."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from dynamo_pipeline.schedules import (
    ClockBand, Instance, Pool, Schedule, ScheduleError, ScheduleKeyError, Window, canonical_json,
    schedule_key, sign, verify,
)

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
KEY = b"k" * 32


def _inst(iid: str, node: str, gpus: tuple[int, ...], clock: int = 1200) -> Instance:
    return Instance(instance_id=iid, node=node, gpu_ids=gpus, tp=len(gpus), clock_mhz=clock,
                    clock_table=(ClockBand(max_load_rps=1.0, clock_mhz=1000), ClockBand(max_load_rps=2.0, clock_mhz=1400)),
                    max_load_rps=2.0, fallback_clock_mhz=1980)


def make_schedule(version: int = 1, **kw) -> Schedule:
    pools = (Pool(pool_id="p0", classes=("SS", "SM"), servers=("n0",),
                  instances=(_inst("a", "n0", (0, 1)), _inst("b", "n0", (2, 3)))),)
    base = dict(version=version, created_at=T0, model="Llama-2-70B", gpu="H100-SXM",
                valid=(Window(start=T0, end=T0 + timedelta(minutes=5)),), pools=pools,
                routing={"SS": {"p0": {"a": 0.5, "b": 0.5}}, "SM": {"p0": {"a": 1.0}}})
    base.update(kw)
    return Schedule(**base)


def test_round_trip_through_json_verifies():
    signed = sign(make_schedule(), KEY)
    assert verify(signed.to_json(), KEY) == signed.schedule


def test_tampered_clock_is_rejected():
    doc = json.loads(sign(make_schedule(), KEY).to_json())
    doc["schedule"]["pools"][0]["instances"][0]["clock_mhz"] = 1980
    with pytest.raises(ScheduleError, match="signature does not match"):
        verify(json.dumps(doc), KEY)


def test_schedule_signed_under_another_key_is_rejected():
    foreign = sign(make_schedule(), b"f" * 32)
    with pytest.raises(ScheduleError, match="another key"):
        verify(foreign.to_json(), KEY)


def test_signature_does_not_depend_on_formatting_or_key_order():
    s = make_schedule()
    doc = json.loads(sign(s, KEY).to_json())
    reordered = {"signature": doc["signature"], "schedule": dict(reversed(list(doc["schedule"].items()))),
                 "algorithm": doc["algorithm"]}
    assert verify(json.dumps(reordered), KEY).version == 1
    assert canonical_json(s) == canonical_json(Schedule.model_validate_json(s.model_dump_json(indent=4)))


def test_missing_key_names_the_variable():
    with pytest.raises(ScheduleKeyError, match="DYNAMO_SCHEDULE_KEY is not set"):
        schedule_key({})
    with pytest.raises(ScheduleKeyError, match="at least 16"):
        schedule_key({"DYNAMO_SCHEDULE_KEY": "short"})
    assert schedule_key({"DYNAMO_SCHEDULE_KEY": "s" * 20}) == b"s" * 20


def test_clock_table_lookup_uses_first_covering_band_then_fallback():
    inst = _inst("a", "n0", (0, 1))
    assert [inst.clock_for_load(x) for x in (0.0, 1.0, 1.5, 2.0, 2.1)] == [1000, 1000, 1400, 1400, 1980]


@pytest.mark.parametrize("bad, match", [
    (dict(routing={"SS": {"p0": {"a": 0.5}}}), "sum to 0.5"),
    (dict(routing={"SS": {"p0": {"zz": 1.0}}}), "not in pool"),
    (dict(valid=()), "at least 1"),
])
def test_invalid_schedules_are_refused(bad, match):
    with pytest.raises(ValidationError, match=match):
        make_schedule(**bad)


def test_instance_checks_gpus_against_tp_and_band_order():
    with pytest.raises(ValidationError, match="distinct"):
        Instance(instance_id="x", node="n", gpu_ids=(0, 0), tp=2, clock_mhz=1000,
                 clock_table=(ClockBand(max_load_rps=1, clock_mhz=1000),), max_load_rps=1, fallback_clock_mhz=1980)
    with pytest.raises(ValidationError, match="increasing"):
        Instance(instance_id="x", node="n", gpu_ids=(0, 1), tp=2, clock_mhz=1000,
                 clock_table=(ClockBand(max_load_rps=2, clock_mhz=1000), ClockBand(max_load_rps=1, clock_mhz=1200)),
                 max_load_rps=1, fallback_clock_mhz=1980)


def test_two_instances_cannot_share_a_gpu():
    pools = (Pool(pool_id="p0", classes=("SS",), servers=("n0",),
                  instances=(_inst("a", "n0", (0, 1)), _inst("b", "n0", (1, 2)))),)
    with pytest.raises(ValidationError, match="two instances"):
        make_schedule(pools=pools, routing={})


def test_naive_times_are_refused_and_window_lookup_is_utc():
    with pytest.raises(ValidationError, match="timezone-aware"):
        Window(start=datetime(2026, 1, 1), end=datetime(2026, 1, 2))
    s = make_schedule()
    assert s.valid_at(T0 + timedelta(minutes=1)) and not s.valid_at(T0 + timedelta(minutes=5))
    assert [i.instance_id for i in s.instances_on("n0")] == ["a", "b"]
