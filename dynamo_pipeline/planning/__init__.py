"""The hierarchical planner (DESIGN §4): pool level (MILP), cluster level, instance-level clock tables.

``problem`` turns a profile frame, loads and settings into plain data; ``model`` builds the MILP;
``solve`` solves it (HiGHS, CBC fallback, greedy and all-capacity plans so there is always a plan);
``extract`` and ``score`` turn counts into plans and score any plan without the solver; ``cluster``
sizes pools and chains the nightly plan; ``clocks`` makes the clock tables; ``records`` keeps plans
and carbon intensity in the store; ``testing`` is a synthetic profile for tests and benchmarks.
"""

from dynamo_pipeline.planning.clocks import clock_table
from dynamo_pipeline.planning.cluster import ClusterPlan, cluster_plan, nightly_plan
from dynamo_pipeline.planning.extract import PoolPlan
from dynamo_pipeline.planning.model import build_pool_model
from dynamo_pipeline.planning.problem import PlanningError, PoolProblem, pool_problem, resolve_loads
from dynamo_pipeline.planning.score import score_counts
from dynamo_pipeline.planning.solve import plan_pool, solve_model

__all__ = [
    "ClusterPlan", "PlanningError", "PoolPlan", "PoolProblem", "build_pool_model", "clock_table", "cluster_plan",
    "nightly_plan", "plan_pool", "pool_problem", "resolve_loads", "score_counts", "solve_model",
]
