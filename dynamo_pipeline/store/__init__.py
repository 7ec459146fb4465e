"""The store: SQLAlchemy 2 schema, Alembic migrations and small repository functions.

SQLite by default (a file under ``DYNAMO_HOME``), PostgreSQL by URL (psycopg 3). Stages talk to
each other only through the store or plain data objects; the functions here return plain data
(dataclasses, DataFrames), never ORM rows.
"""

from dynamo_pipeline.store.db import Store, open_store, upgrade

__all__ = ["Store", "open_store", "upgrade"]
