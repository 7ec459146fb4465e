"""The `dynamo` command: one subcommand per pipeline step, each a thin twin of a library function.

Global options pick the config file and the database; every subcommand's ``--help`` says what it
reads, what it writes and how to fix the usual errors. Stage commands live in sibling modules
(``cli/ingest.py`` …) and register themselves on :data:`main`.
"""

from __future__ import annotations

import sys

import click

from dynamo_pipeline.cli.common import Context, fail, pass_ctx
from dynamo_pipeline.config import ConfigError, load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="DYNAMO_CONFIG",
              help="YAML settings file (default: ./dynamo.yaml when present). Env: DYNAMO_CONFIG.")
@click.option("--db", "db_url", envvar="DYNAMO_DATABASE_URL",
              help="Database URL: sqlite:///PATH (default: $DYNAMO_HOME/dynamo.db) or "
                   "postgresql+psycopg://USER@HOST:PORT/DB. Env: DYNAMO_DATABASE_URL.")
@click.version_option(package_name="dynamo-pipeline")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, db_url: str | None) -> None:
    """Energy-aware planning for LLM inference fleets.

    \b
    Typical flow:
      dynamo db upgrade                 create or migrate the store
      dynamo ingest LOGS...             load request logs (quarantining bad rows)
      dynamo windows                    per-class arrivals per 5-minute window
      dynamo classes fit                propose class thresholds from history
    """
    try:
        overrides = {"database_url": db_url} if db_url else {}
        settings = load_settings(config_path, **overrides)
    except ConfigError as e:
        fail(str(e))
    ctx.obj = Context(settings=settings)


def _subcommand(argv: list[str]) -> str | None:
    """The subcommand named on the command line, skipping the global options."""
    it = iter(argv)
    for a in it:
        if a in ("--config", "--db"):
            next(it, None)
        elif not a.startswith("-"):
            return a
    return None


def _register() -> None:
    # `dynamo agent …` runs on every GPU server: load only its commands (no pandas, no sklearn)
    if _subcommand(sys.argv[1:]) == "agent":
        from dynamo_pipeline.cli import agent  # noqa: F401
        return
    from dynamo_pipeline.cli import agent, db, forecast, ingest, lengths, pipeline, plan, profile, simulate  # noqa: F401  (each adds its commands)


_register()

__all__ = ["main", "pass_ctx", "Context"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
