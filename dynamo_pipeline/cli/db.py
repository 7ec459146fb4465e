"""`dynamo db …` and `dynamo config show`: schema migrations and the settings in force."""

from __future__ import annotations

import click
import yaml
from sqlalchemy.engine import make_url

from dynamo_pipeline.cli import main
from dynamo_pipeline.cli.common import Context, fail, pass_ctx
from dynamo_pipeline.store.db import upgrade


@main.group()
def db() -> None:
    """Create or migrate the store (SQLite by default, PostgreSQL by URL)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to migrate to.")
@pass_ctx
def db_upgrade(ctx: Context, revision: str) -> None:
    """Apply schema migrations (safe to run again: it does nothing when up to date)."""
    url = ctx.settings.database_url
    try:
        upgrade(url, revision)
    except Exception as e:  # connection errors come in many types; say what to check
        fail(f"could not migrate {make_url(url).render_as_string(hide_password=True)}: {e}\n"
             "check that the database server is running and the URL (--db / DYNAMO_DATABASE_URL) is right")
    click.echo(f"store at {make_url(url).render_as_string(hide_password=True)} is at revision {revision}")


@main.group()
def config() -> None:
    """Inspect settings (YAML file + DYNAMO_* environment variables)."""


@config.command("show")
@pass_ctx
def config_show(ctx: Context) -> None:
    """Print the settings in force, as YAML you can save and edit."""
    data = ctx.settings.model_dump(mode="json")
    data["database_url"] = make_url(data["database_url"]).render_as_string(hide_password=True)
    click.echo(yaml.safe_dump(data, sort_keys=False))
