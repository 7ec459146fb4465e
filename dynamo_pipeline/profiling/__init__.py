"""Profiling: jobs that measure the energy-performance grid on a runner (simulated server or a
real engine with NVML), the writer of ``profiles/<gpu>/<model>.csv`` and the store table, and the
vectorised lookup the planner uses (DESIGN §3, §6)."""

from dynamo_pipeline.profiling.grid import class_bins, class_slos, draw_requests
from dynamo_pipeline.profiling.job import ProfileJobResult, SimRunner, run_profile
from dynamo_pipeline.profiling.lookup import METRICS, ProfileError, ProfileLookup, ProfileRangeError, load_profile
from dynamo_pipeline.profiling.writer import PROFILE_COLUMNS, profile_path, read_rows, write_rows

__all__ = [
    "load_profile", "ProfileLookup", "ProfileError", "ProfileRangeError", "METRICS", "PROFILE_COLUMNS",
    "run_profile", "SimRunner", "ProfileJobResult", "class_bins", "class_slos", "draw_requests",
    "profile_path", "read_rows", "write_rows",
]
