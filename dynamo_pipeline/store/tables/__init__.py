"""Table definitions, one module per stage that owns them; all share :data:`Base`'s metadata."""

from dynamo_pipeline.store.tables.base import Base
from dynamo_pipeline.store.tables import forecast, ingest, profiles  # noqa: F401  (registers tables)
from dynamo_pipeline.store.tables import planning, sim  # noqa: F401

metadata = Base.metadata

__all__ = ["Base", "metadata"]
