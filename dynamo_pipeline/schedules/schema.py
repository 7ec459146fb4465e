"""The published schedule: what the planner hands to node agents and to the gateway.

A :class:`Schedule` is one immutable, versioned document (DESIGN §3): for each pool, its classes,
servers and instances (node, GPU ids, TP); for each instance its planned clock, a clock table by
observed load (so the agent picks its clock every few seconds on its own), the most load it may be
given and the fallback clock; and the routing table a gateway needs: class → pool → instance → the
share of the class's load that instance may take.

Schedules are signed with HMAC-SHA256 under a key shared by the planner and the agents
(:func:`sign`, :func:`verify`). The signature covers a canonical JSON form of the schedule
(:func:`canonical_json`: sorted keys, no whitespace, UTC times), so any change to the body — or a
schedule signed under another key — fails :func:`verify`. The key comes from the environment
variable ``DYNAMO_SCHEDULE_KEY`` only (:func:`schedule_key`), never from code or config files.

This module is the contract the node agent builds on; it holds no planner logic and no I/O
besides reading the key from the environment. Publishing and reading live in ``store.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
from datetime import datetime, timezone
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Version of this document format; bump when fields change meaning.
SCHEMA_VERSION = 1
#: Environment variable that holds the shared signing key.
KEY_ENV = "DYNAMO_SCHEDULE_KEY"
#: Shortest key accepted (characters): HMAC keys shorter than this are guessable.
MIN_KEY_CHARS = 16
#: Tolerance on "the shares of a class sum to 1".
SHARE_TOL = 1e-6

NonNegFloat = Annotated[float, Field(ge=0)]


class ScheduleError(ValueError):
    """A schedule is invalid, unsigned, tampered with or signed under another key."""


class ScheduleKeyError(ScheduleError):
    """The signing key is missing or too short; the message says how to set it."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _utc(v: datetime) -> datetime:
    if v.tzinfo is None:
        raise ValueError("must be timezone-aware (UTC), got a naive datetime")
    return v.astimezone(timezone.utc)


class ClockBand(_Frozen):
    """Up to ``max_load_rps`` observed arrivals per second on this instance, run at ``clock_mhz``."""

    max_load_rps: NonNegFloat
    clock_mhz: int = Field(gt=0)


class Instance(_Frozen):
    """One model instance: ``tp`` GPUs of one node, with its clock plan."""

    instance_id: str = Field(min_length=1)
    node: str = Field(min_length=1)
    gpu_ids: tuple[int, ...]
    tp: int = Field(gt=0)
    clock_mhz: int = Field(gt=0, description="the clock planned for the forecast load")
    clock_table: tuple[ClockBand, ...] = Field(min_length=1)
    max_load_rps: NonNegFloat = Field(description="the most arrivals/s the gateway may send here")
    fallback_clock_mhz: int = Field(gt=0, description="clock when the load is above the table or the SLO is at risk")

    @model_validator(mode="after")
    def _check(self) -> "Instance":
        if len(self.gpu_ids) != self.tp or len(set(self.gpu_ids)) != self.tp or min(self.gpu_ids) < 0:
            raise ValueError(
                f"instance {self.instance_id}: gpu_ids {list(self.gpu_ids)} must be {self.tp} distinct "
                "non-negative GPU indices (one per TP rank)"
            )
        loads = [b.max_load_rps for b in self.clock_table]
        if any(b <= a for a, b in zip(loads, loads[1:])):
            raise ValueError(f"instance {self.instance_id}: clock_table bands must have increasing max_load_rps, got {loads}")
        return self

    def clock_for_load(self, load_rps: float) -> int:
        """The clock for an observed load: the first band that covers it, else the fallback clock."""
        for band in self.clock_table:
            if load_rps <= band.max_load_rps:
                return band.clock_mhz
        return self.fallback_clock_mhz


class Pool(_Frozen):
    """A group of servers serving one or more request classes."""

    pool_id: str = Field(min_length=1)
    classes: tuple[str, ...] = Field(min_length=1)
    servers: tuple[str, ...]
    instances: tuple[Instance, ...]

    @model_validator(mode="after")
    def _check(self) -> "Pool":
        servers = set(self.servers)
        for inst in self.instances:
            if inst.node not in servers:
                raise ValueError(f"pool {self.pool_id}: instance {inst.instance_id} is on node {inst.node}, not one of its servers")
        return self


class Window(_Frozen):
    """A half-open validity interval [start, end) in UTC."""

    start: datetime
    end: datetime

    _utc_times = field_validator("start", "end")(_utc)

    @model_validator(mode="after")
    def _order(self) -> "Window":
        if self.end <= self.start:
            raise ValueError(f"window end {self.end.isoformat()} must be after start {self.start.isoformat()}")
        return self

    def contains(self, t: datetime) -> bool:
        return self.start <= _utc(t) < self.end


#: class name → pool id → instance id → share of the class's load (0..1).
Routing = dict[str, dict[str, dict[str, float]]]


class Schedule(_Frozen):
    """One published plan. ``version`` increases by one per publication and is never reused."""

    schema_version: int = SCHEMA_VERSION
    version: int = Field(ge=1)
    created_at: datetime
    model: str
    gpu: str
    valid: tuple[Window, ...] = Field(min_length=1)
    pools: tuple[Pool, ...]
    routing: Routing
    plan_id: int | None = None
    flags: tuple[str, ...] = ()

    _utc_created = field_validator("created_at")(_utc)

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"schedule format {v} is not supported (this code reads {SCHEMA_VERSION}); upgrade the reader")
        return v

    @model_validator(mode="after")
    def _check(self) -> "Schedule":
        instances: dict[str, str] = {}
        gpus: set[tuple[str, int]] = set()
        for pool in self.pools:
            for inst in pool.instances:
                if inst.instance_id in instances:
                    raise ValueError(f"instance id {inst.instance_id} appears twice")
                instances[inst.instance_id] = pool.pool_id
                for g in inst.gpu_ids:
                    if (inst.node, g) in gpus:
                        raise ValueError(f"GPU {g} of node {inst.node} is given to two instances")
                    gpus.add((inst.node, g))
        pool_ids = [p.pool_id for p in self.pools]
        if len(set(pool_ids)) != len(pool_ids):
            raise ValueError(f"pool ids must be unique, got {pool_ids}")
        for cls_name, by_pool in self.routing.items():
            total = 0.0
            for pool_id, shares in by_pool.items():
                for inst_id, share in shares.items():
                    if instances.get(inst_id) != pool_id:
                        raise ValueError(f"routing[{cls_name}][{pool_id}] names instance {inst_id}, which is not in pool {pool_id}")
                    if not (0.0 <= share <= 1.0) or math.isnan(share):
                        raise ValueError(f"routing[{cls_name}][{pool_id}][{inst_id}] share {share} is not in [0, 1]")
                    total += share
            if by_pool and abs(total - 1.0) > SHARE_TOL:
                raise ValueError(f"routing[{cls_name}]: shares sum to {total:.6f}, must sum to 1")
        return self

    # -- helpers for readers (agent, gateway) -------------------------------------------------
    def valid_at(self, t: datetime) -> bool:
        return any(w.contains(t) for w in self.valid)

    def instances_on(self, node: str) -> list[Instance]:
        """This node's instances (what its agent applies)."""
        return [i for p in self.pools for i in p.instances if i.node == node]

    def instance(self, instance_id: str) -> Instance:
        for p in self.pools:
            for i in p.instances:
                if i.instance_id == instance_id:
                    return i
        raise KeyError(f"instance {instance_id} is not in schedule version {self.version}")


class SignedSchedule(_Frozen):
    """A schedule with its HMAC-SHA256 signature (hex) over :func:`canonical_json`."""

    schedule: Schedule
    algorithm: str = "HMAC-SHA256"
    signature: str = Field(pattern=r"^[0-9a-f]{64}$")

    def to_json(self) -> str:
        """The form written to files and the store (pretty-printed; the signature does not depend on it)."""
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> "SignedSchedule":
        """Parse and validate (schema only; call :func:`verify` to check the signature)."""
        try:
            return cls.model_validate_json(text)
        except ValueError as e:
            raise ScheduleError(f"not a valid signed schedule: {e}") from e


def canonical_json(schedule: Schedule) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, UTF-8, times in UTC ISO-8601."""
    body = schedule.model_dump(mode="json")
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def schedule_key(env: dict[str, str] | None = None) -> bytes:
    """The shared signing key from ``DYNAMO_SCHEDULE_KEY``; :class:`ScheduleKeyError` when unset or short."""
    value = (os.environ if env is None else env).get(KEY_ENV, "")
    if not value:
        raise ScheduleKeyError(
            f"{KEY_ENV} is not set: schedules are signed with a shared key. Set it to the same secret "
            f"(at least {MIN_KEY_CHARS} characters, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`) "
            "on the planner and on every node agent"
        )
    if len(value) < MIN_KEY_CHARS:
        raise ScheduleKeyError(f"{KEY_ENV} is {len(value)} characters; use at least {MIN_KEY_CHARS}")
    return value.encode()


def signature_of(schedule: Schedule, key: bytes) -> str:
    return hmac.new(key, canonical_json(schedule), hashlib.sha256).hexdigest()


def sign(schedule: Schedule, key: bytes | None = None) -> SignedSchedule:
    """Sign a schedule (key from the environment when not given)."""
    key = schedule_key() if key is None else key
    return SignedSchedule(schedule=schedule, signature=signature_of(schedule, key))


def verify(signed: SignedSchedule | str | bytes, key: bytes | None = None) -> Schedule:
    """The schedule when its signature is valid under ``key``; :class:`ScheduleError` when the
    document is malformed, was changed after signing, or was signed under another key."""
    if not isinstance(signed, SignedSchedule):
        signed = SignedSchedule.from_json(signed)
    if signed.algorithm != "HMAC-SHA256":
        raise ScheduleError(f"unsupported signature algorithm {signed.algorithm!r}; expected HMAC-SHA256")
    key = schedule_key() if key is None else key
    expected = signature_of(signed.schedule, key)
    if not hmac.compare_digest(expected, signed.signature):
        raise ScheduleError(
            f"schedule version {signed.schedule.version}: signature does not match — the schedule was "
            f"changed after signing or signed under another key; check that {KEY_ENV} is the planner's key"
        )
    return signed.schedule
