"""Alembic environment: runs migrations on the connection handed in by `store.db.upgrade`, or on
the URL in the config when run through the `alembic` command."""

from alembic import context
from sqlalchemy import create_engine

from dynamo_pipeline.store.tables import metadata

config = context.config


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as c:
        context.configure(connection=c, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
