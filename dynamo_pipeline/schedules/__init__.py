"""Published schedules: the signed, versioned plan documents node agents and gateways read.

``schema`` defines the document and its HMAC-SHA256 signing; ``store`` publishes schedules to the
database and to a directory of JSON files and reads them back; ``build`` turns a planner's plan
into a schedule.
"""

from dynamo_pipeline.schedules.schema import (
    SCHEMA_VERSION,
    ClockBand,
    Instance,
    Pool,
    Schedule,
    ScheduleError,
    ScheduleKeyError,
    SignedSchedule,
    Window,
    canonical_json,
    schedule_key,
    sign,
    verify,
)

__all__ = [
    "SCHEMA_VERSION", "ClockBand", "Instance", "Pool", "Schedule", "ScheduleError", "ScheduleKeyError",
    "SignedSchedule", "Window", "canonical_json", "schedule_key", "sign", "verify",
]
