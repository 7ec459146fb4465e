"""Table definitions, one module per stage that owns them; all share :data:`Base`'s metadata."""

from dynamo_pipeline.store.tables.base import Base
from dynamo_pipeline.store.tables import agent, forecast, ingest, planning, profiles, sim  # noqa: F401  (registers tables)

metadata = Base.metadata

__all__ = ["Base", "metadata"]
