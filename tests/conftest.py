"""Shared fixtures. ``store`` runs each test on SQLite and on PostgreSQL (DYNAMO_TEST_PG_URL); each
PostgreSQL test gets its own schema, so concurrent runs never see each other's tables. Under CI=true a
PostgreSQL that cannot be reached fails the test instead of skipping it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.store import open_store, upgrade

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "azure_llm_2023"
SHARED_DATA = ROOT.parent / "shared" / "data"
PG_URL = os.environ.get("DYNAMO_TEST_PG_URL")


def _pg_or_skip() -> str:
    if not PG_URL:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but DYNAMO_TEST_PG_URL is not set: PostgreSQL tests must run in CI")
        pytest.skip("set DYNAMO_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test to run PostgreSQL tests")
    try:
        eng = create_engine(PG_URL)
        with eng.connect():
            pass
        eng.dispose()
    except Exception as e:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at DYNAMO_TEST_PG_URL is unreachable under CI=true: {e}")
        pytest.skip(f"PostgreSQL unreachable ({e}); start it or unset DYNAMO_TEST_PG_URL")
    return PG_URL


@pytest.fixture
def pg_url():
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    base = _pg_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    eng = create_engine(base)
    with eng.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    url = base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}"
    yield url
    with eng.begin() as c:
        # a test that leaked an open transaction must not hang the suite: fail the drop instead
        c.execute(text("SET lock_timeout = '10s'"))
        c.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """An empty database URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dynamo.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(db_url, tmp_path):
    return load_settings(None, database_url=db_url, home=str(tmp_path))


@pytest.fixture
def store(settings):
    """A migrated store on each backend."""
    upgrade(settings.database_url)
    s = open_store(settings.database_url)
    yield s
    s.dispose()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the developer's dynamo.yaml or DYNAMO_* variables by accident."""
    for k in list(os.environ):
        if k.startswith("DYNAMO_") and k != "DYNAMO_TEST_PG_URL":
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
