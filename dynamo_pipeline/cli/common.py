"""Shared CLI plumbing: the context object (settings, lazily opened store) and error exits."""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from dynamo_pipeline.config import Settings
from dynamo_pipeline.store.db import Store, StoreError, open_store


@dataclass
class Context:
    settings: Settings
    _store: Store | None = field(default=None, repr=False)

    def store(self, check: bool = True) -> Store:
        """The store, opened once; with ``check`` it must be migrated to the newest schema."""
        if self._store is None:
            self._store = open_store(self.settings.database_url)
        if check:
            try:
                self._store.check_current()
            except StoreError as e:
                fail(str(e))
        return self._store


pass_ctx = click.make_pass_decorator(Context)


def fail(msg: str, code: int = 2) -> None:
    """Print an error (what happened and what to do) and exit."""
    click.secho(f"error: {msg}", fg="red", err=True)
    raise SystemExit(code)


def parse_time_s(value: str | None) -> int | None:
    """An ISO 8601 time from the command line as UTC epoch seconds (naive times are UTC)."""
    if value is None:
        return None
    import pandas as pd  # imported here: `dynamo agent` must start without pandas

    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a time; use ISO 8601, e.g. 2023-11-16 or 2023-11-16T18:00Z")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
    return int(ts.timestamp())
