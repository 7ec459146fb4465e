"""Store: migrations on SQLite and PostgreSQL, and the not-migrated error."""

import pytest
from sqlalchemy import inspect

from dynamo_pipeline.store import open_store, upgrade
from dynamo_pipeline.store.db import StoreError


def test_upgrade_creates_every_table_and_is_idempotent(db_url):
    upgrade(db_url)
    upgrade(db_url)  # a second run is a no-op
    s = open_store(db_url)
    names = set(inspect(s.engine).get_table_names())
    assert {"requests", "quarantine", "ingest_runs", "window_loads", "alembic_version"} <= names
    s.check_current()
    s.dispose()


def test_unmigrated_store_says_to_run_upgrade(db_url):
    s = open_store(db_url)
    with pytest.raises(StoreError, match="dynamo db upgrade"):
        s.check_current()
    s.dispose()


def test_downgrade_to_base_and_back(db_url):
    upgrade(db_url)
    upgrade_down = __import__("alembic.command", fromlist=["downgrade"]).downgrade
    from dynamo_pipeline.store.db import _alembic_config, make_engine

    eng = make_engine(db_url)
    with eng.begin() as conn:
        cfg = _alembic_config(db_url)
        cfg.attributes["connection"] = conn
        upgrade_down(cfg, "base")
    assert "requests" not in inspect(eng).get_table_names()
    eng.dispose()
    upgrade(db_url)
    s = open_store(db_url)
    s.check_current()
    s.dispose()
