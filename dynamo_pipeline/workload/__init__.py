"""Multi-day workloads: the ServeGen reader (production load → per-class window loads) and a
generator that expands window loads into a synthetic request stream for the simulator and ingestion.
"""

from dynamo_pipeline.workload.generator import REQUEST_COLUMNS, generate_requests
from dynamo_pipeline.workload.servegen import ServeGenError, default_root, servegen_window_loads

__all__ = ["REQUEST_COLUMNS", "ServeGenError", "default_root", "generate_requests", "servegen_window_loads"]
