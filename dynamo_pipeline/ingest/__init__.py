"""Ingestion: request logs of any serving stack → validated request records in the store.

Readers (:mod:`.readers`) for the Azure trace CSV and generic CSV / JSONL / Parquet through a
column mapping (:mod:`.mapping`); vectorised validation with a quarantine for every bad row
(:mod:`.validate`); idempotent, crash-safe loading (:mod:`.load`); per-class window loads
(:mod:`.windows`).
"""

from dynamo_pipeline.ingest.load import IngestSummary, ingest_file, ingest_paths
from dynamo_pipeline.ingest.mapping import AZURE, ColumnMapping, MappingError, load_mapping
from dynamo_pipeline.ingest.windows import refresh_window_loads, window_loads

__all__ = ["AZURE", "ColumnMapping", "IngestSummary", "MappingError", "ingest_file", "ingest_paths",
           "load_mapping", "refresh_window_loads", "window_loads"]
