"""Trace replay of an inference cluster under a policy (DynamoLLM, baselines, oracle).

Requests (:mod:`.trace`) flow through a cluster model shared by two modes (:mod:`.cluster`): pools
and instances from a policy's per-window plans (:mod:`.policies`, :mod:`.plan`), routing by predicted
class, servers starting and draining, re-shards and clock changes with their delays, and the
paper's fast path for mispredictions. Each instance-tick is then evaluated by profile lookups
(``fast``, :mod:`.fast`) or on the simulated inference server (``detailed``, :mod:`.detailed`);
:mod:`.replay` accounts energy, latency, SLOs, cost and carbon per window; :mod:`.evaluate` runs
every policy and writes the paper-style table and plots; :mod:`.results` stores runs.
"""
