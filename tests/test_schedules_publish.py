"""Schedules from plans: packing, clock tables, routing; publishing is immutable and atomic."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from dynamo_pipeline.planning.problem import pool_problem
from dynamo_pipeline.planning.solve import plan_pool
from dynamo_pipeline.planning.testing import synthetic_profile
from dynamo_pipeline.schedules import ScheduleError, sign, verify
from dynamo_pipeline.schedules.build import build_schedule
from dynamo_pipeline.schedules.store import (
    LATEST, next_version, publish, read_from_dir, read_from_store,
)

KEY = b"p" * 32
T0 = datetime(2026, 11, 24, 16, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def profile():
    return synthetic_profile()


def _schedule(profile, settings, version=1, load=6.0):
    plan = plan_pool(pool_problem(profile, {"SS": load, "LL": 0.5}, settings, {"SS": 16, "LL": 16}))
    return plan, build_schedule(plan, profile, settings, version, [(T0, T0 + timedelta(minutes=5))],
                                servers_by_pool={"SS": 2, "LL": 2})


def test_schedule_carries_every_planned_instance_with_routing_shares(profile, settings):
    plan, sch = _schedule(profile, settings)
    insts = [i for p in sch.pools for i in p.instances]
    assert len(insts) == plan.score.instances
    assert sum(i.tp for i in insts) == sum(plan.score.gpus_used.values())
    for cls in ("SS", "LL"):
        shares = [v for by_i in sch.routing[cls].values() for v in by_i.values()]
        assert sum(shares) == pytest.approx(1.0)
    for inst in insts:
        # the table reaches at least the planned load (beyond it: the next clock that meets the SLO)
        assert inst.fallback_clock_mhz == 1980 and inst.clock_table[-1].max_load_rps >= inst.max_load_rps - 1e-9
    assert [len(p.servers) for p in sch.pools] == [2, 2]


def test_publish_is_immutable_idempotent_and_readable(profile, settings, store, tmp_path):
    _plan, sch = _schedule(profile, settings)
    signed = sign(sch, KEY)
    publish(signed, store=store, directory=tmp_path / "sched")
    publish(signed, store=store, directory=tmp_path / "sched")          # same body again: no-op
    assert next_version(store) == 2
    _plan2, changed = _schedule(profile, settings, version=1, load=9.0)
    with pytest.raises(ScheduleError, match="immutable"):
        publish(sign(changed, KEY), store=store)
    with pytest.raises(ScheduleError, match="immutable"):
        publish(sign(changed, KEY), directory=tmp_path / "sched")
    assert read_from_store(store, verify_key=KEY) == signed
    assert read_from_dir(tmp_path / "sched", verify_key=KEY) == signed
    assert not list((tmp_path / "sched").glob(".*.tmp"))


def test_latest_points_at_newest_and_tampered_file_is_rejected(profile, settings, tmp_path):
    d = tmp_path / "sched"
    for v in (1, 2):
        publish(sign(_schedule(profile, settings, version=v)[1], KEY), directory=d)
    assert read_from_dir(d, verify_key=KEY).schedule.version == 2
    doc = json.loads((d / LATEST).read_text())
    doc["schedule"]["pools"][0]["instances"][0]["max_load_rps"] += 5
    (d / LATEST).write_text(json.dumps(doc))
    with pytest.raises(ScheduleError, match="signature"):
        read_from_dir(d, verify_key=KEY)
    with pytest.raises(ScheduleError, match="signature"):
        read_from_dir(d, version=1, verify_key=b"q" * 32)


def test_reading_uses_the_environment_key(profile, settings, tmp_path, monkeypatch):
    publish(sign(_schedule(profile, settings)[1], KEY), directory=tmp_path)
    with pytest.raises(ScheduleError, match="DYNAMO_SCHEDULE_KEY is not set"):
        read_from_dir(tmp_path)
    monkeypatch.setenv("DYNAMO_SCHEDULE_KEY", KEY.decode())
    assert verify(read_from_dir(tmp_path)).version == 1
