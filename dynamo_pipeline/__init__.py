"""dynamo-pipeline: energy-aware planning for LLM inference fleets.

Stages (one sub-package each): ``ingest`` request logs → ``classify`` by length → ``forecast`` loads
and ``lengths`` → ``profiling`` on a ``hardware`` backend → ``planning`` → ``schedules`` → ``agent``;
``sim`` replays traces under a policy and ``reports`` query the ``store``. ``cli`` runs every stage.
"""

__version__ = "0.1.0"
