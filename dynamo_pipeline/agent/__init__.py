"""The node agent (DESIGN §5): a small daemon per GPU server that enforces the published schedule.

It reads its node's part of the newest valid schedule (store, directory or HTTP; schema and
signature checked), applies clocks through a hardware backend, hands instance changes to an
executor, picks clocks by observed load every few seconds, overrides to the top clock when the SLO
is at risk, falls back to the top clock when the schedule is stale, and reports what it did to the
store (buffered locally when the store is away). :func:`build_agent` wires one from settings;
:func:`agents_acknowledged` is what the planner's DAG calls to see that nodes applied a version.

Keep this package light: it runs on every GPU server, so nothing here imports pandas, scikit-learn
or Airflow.
"""

from dynamo_pipeline.agent.acks import acks_frame, agents_acknowledged
from dynamo_pipeline.agent.build import build_agent

__all__ = ["build_agent", "agents_acknowledged", "acks_frame"]
