"""Engines, sessions and migrations.

:func:`open_store` gives a :class:`Store` for a database URL; :func:`upgrade` brings its schema to
the newest Alembic revision (``dynamo db upgrade``). SQLite files get WAL mode and a busy timeout so
that an agent and a planner can share one file; PostgreSQL goes through psycopg 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


class StoreError(RuntimeError):
    """The store cannot be used as asked (not migrated, unreachable); the message says what to do."""


@dataclass
class Store:
    """A database the stages share. ``engine`` for Core SQL, ``session()`` for ORM work."""

    url: str
    engine: Engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return sessionmaker(self.engine, expire_on_commit=False)()

    def check_current(self) -> None:
        """Raise :class:`StoreError` unless the schema is at the newest migration."""
        head = ScriptDirectory.from_config(_alembic_config(self.url)).get_current_head()
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        if current != head:
            raise StoreError(
                f"the store at {make_url(self.url).render_as_string(hide_password=True)} is at schema "
                f"revision {current!r}, the code needs {head!r}: run `dynamo db upgrade`"
            )

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache: bulk loads touch large indexes
    cur.close()


def make_engine(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if u.get_backend_name() == "postgresql":
        if u.drivername == "postgresql":
            url = u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        return create_engine(url, pool_pre_ping=True)
    raise StoreError(f"unsupported database {u.get_backend_name()!r}: use sqlite:/// or postgresql+psycopg://")


def open_store(url: str) -> Store:
    """A :class:`Store` for ``url`` (not migrated here; call :func:`upgrade` or ``dynamo db upgrade``)."""
    return Store(url=url, engine=make_engine(url))


def _alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` on the database at ``url``."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = _alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
