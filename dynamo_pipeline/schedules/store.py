"""Publishing and reading signed schedules: the store (table ``schedules``) and a JSON directory.

A version is published once: publishing it again with the same body is a no-op, with a different
body it is refused (:class:`ScheduleError`) — schedules are immutable, a change is a new version.
In a directory each version is ``schedule-<version>.json`` and ``latest.json`` names the newest;
every file is written to a temporary file in the same directory and renamed into place, so a
reader (the node agent) never sees a half-written file. Readers get a :class:`SignedSchedule` and
call :func:`~dynamo_pipeline.schedules.schema.verify` (the ``read_*`` helpers do when given
``verify_key`` or by default with the environment key).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from sqlalchemy import func, select

from dynamo_pipeline.schedules.schema import ScheduleError, SignedSchedule, canonical_json, verify
from dynamo_pipeline.store.db import Store
from dynamo_pipeline.store.tables.planning import ScheduleRow

LATEST = "latest.json"


def file_name(version: int) -> str:
    return f"schedule-{version:08d}.json"


def body_sha256(signed: SignedSchedule) -> str:
    return hashlib.sha256(canonical_json(signed.schedule)).hexdigest()


def next_version(store: Store) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.max(ScheduleRow.version))) or 0) + 1


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_to_store(store: Store, signed: SignedSchedule) -> bool:
    """Insert the version; True if inserted, False if the same body was already there."""
    sch = signed.schedule
    digest = body_sha256(signed)
    with store.session() as s:
        row = s.get(ScheduleRow, sch.version)
        if row is not None:
            if row.body_sha256 != digest:
                raise ScheduleError(f"schedule version {sch.version} is already published with another body; "
                                    f"schedules are immutable: publish the change as version {next_version(store)}")
            return False
        s.add(ScheduleRow(version=sch.version, created_at=sch.created_at,
                          valid_from_s=int(min(w.start for w in sch.valid).timestamp()),
                          valid_to_s=int(max(w.end for w in sch.valid).timestamp()), plan_id=sch.plan_id,
                          body_sha256=digest, signature=signed.signature, document=signed.to_json()))
        s.commit()
        return True


def publish_to_dir(directory: str | os.PathLike, signed: SignedSchedule) -> Path:
    """Write ``schedule-<version>.json`` (refusing a different body for an existing version) and
    point ``latest.json`` at it when it is the newest version in the directory."""
    d = Path(directory)
    path = d / file_name(signed.schedule.version)
    if path.exists():
        old = SignedSchedule.from_json(path.read_text())
        if body_sha256(old) != body_sha256(signed):
            raise ScheduleError(f"{path} already holds version {signed.schedule.version} with another body; "
                                "schedules are immutable: publish the change as a new version")
    else:
        atomic_write(path, signed.to_json())
    newest = max((int(p.stem.split("-")[1]) for p in d.glob("schedule-*.json")), default=0)
    if signed.schedule.version >= newest:
        atomic_write(d / LATEST, signed.to_json())
    return path


def publish(signed: SignedSchedule, store: Store | None = None, directory: str | os.PathLike | None = None) -> None:
    """Publish to the store and/or a directory (store first: it decides whether the version is new)."""
    if store is None and directory is None:
        raise ValueError("publish needs a store, a directory or both")
    if store is not None:
        publish_to_store(store, signed)
    if directory is not None:
        publish_to_dir(directory, signed)


def read_from_store(store: Store, version: int | None = None, verify_key: bytes | None | bool = None) -> SignedSchedule:
    """A version (default: the newest); verified under ``verify_key`` (None: the environment key;
    False: not verified — only for showing a document)."""
    with store.session() as s:
        if version is None:
            row = s.scalars(select(ScheduleRow).order_by(ScheduleRow.version.desc()).limit(1)).first()
        else:
            row = s.get(ScheduleRow, version)
        if row is None:
            raise ScheduleError("no schedule published yet: run `dynamo schedule publish`" if version is None
                                else f"schedule version {version} is not in the store")
        doc = row.document
    signed = SignedSchedule.from_json(doc)
    if verify_key is not False:
        verify(signed, verify_key if isinstance(verify_key, bytes) else None)
    return signed


def read_from_dir(directory: str | os.PathLike, version: int | None = None,
                  verify_key: bytes | None | bool = None) -> SignedSchedule:
    """``latest.json`` or a given version from a directory, verified as :func:`read_from_store`."""
    path = Path(directory) / (LATEST if version is None else file_name(version))
    if not path.exists():
        raise ScheduleError(f"{path} does not exist: no schedule published to {directory} yet")
    signed = SignedSchedule.from_json(path.read_text())
    if verify_key is not False:
        verify(signed, verify_key if isinstance(verify_key, bytes) else None)
    return signed


def document_dict(signed: SignedSchedule) -> dict:
    return json.loads(signed.to_json())
