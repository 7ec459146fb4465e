"""# dynamo_profiling — profiling fan-out on the GPU nodes

Manual (trigger it with params; profile again when a model, an engine or the hardware changes).
`plan` splits the work into one job per (model, GPU type, grid shard): the grid's request classes
are dealt round-robin into `shards` shards (`dynamo_pipeline.profiling.shards`). Each job is one
**mapped task instance** (dynamic task mapping, `.expand`) routed to the Celery queue `gpu`, or to
`gpu-<type>` for the GPU types listed in the environment variable `DYNAMO_GPU_QUEUES` when the DAG
is parsed (for example `DYNAMO_GPU_QUEUES=H100-SXM,A100-SXM`: workers on H100 nodes run
`airflow celery worker --queues gpu-H100-SXM`). A shard writes its rows to the store under its own
run id and resumes from its `.csv.partial` on the node when retried; a failed shard is retried
alone (Airflow retries one mapped instance, the others keep their results). `merge` (queue
`default`) then merges each (model, GPU) into `profiles/<gpu>/<model>.csv` and one profile version
in the store named after the campaign, with provenance. `dynamo profile --shard K/N --campaign C`
and `dynamo profile merge` run the same steps by hand. See docs/scale-out.md.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from dynamo_pipeline import orchestration as common
from dynamo_pipeline.profiling import shards as S

#: GPU types that have their own worker queue ``gpu-<type>``; every other type goes to ``gpu``.
OWN_QUEUES = tuple(t for t in os.environ.get("DYNAMO_GPU_QUEUES", "").split(",") if t)
QUEUES = ("gpu", *(S.gpu_queue(t, OWN_QUEUES) for t in OWN_QUEUES))

PARAMS = {
    "models": Param(["Llama-2-70B"], type="array", items={"type": "string"}, minItems=1,
                    description="Model cards to profile."),
    "gpus": Param(["H100-SXM"], type="array", items={"type": "string"}, minItems=1,
                  description="GPU cards (types) to profile on; each type runs on its queue."),
    "shards": Param(3, type="integer", minimum=1, maximum=9, description="Grid shards per (model, GPU)."),
    "backend": Param("sim", enum=["sim", "nvml"], description="sim: simulated server; nvml: a real engine."),
    "classes": Param(None, type=["null", "array"], items={"type": "string"},
                     description="Request classes (default: all nine)."),
    "tp": Param(None, type=["null", "array"], items={"type": "integer"}, description="TP degrees (default: those that fit)."),
    "clocks_mhz": Param(None, type=["null", "array"], items={"type": "integer"},
                        description="SM clocks, MHz (default: the GPU card's grid)."),
    "n_requests": Param(600, type="integer", minimum=10, description="Requests per grid point."),
    "engine_url": Param(None, type=["null", "string"], description="nvml: the engine's OpenAI-compatible URL on the node."),
    "gpu_ids": Param(None, type=["null", "array"], items={"type": "integer"}, description="nvml: GPU indices of the engine."),
    "campaign": Param(None, type=["null", "string"], description="Name of the profile version (default: from the run id)."),
}


@dag(
    dag_id="dynamo_profiling",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=12),
    default_args={**common.DEFAULT_ARGS, "execution_timeout": timedelta(hours=2), "retries": 2},
    params=PARAMS,
    tags=["dynamo", "profiling", "gpu"],
    doc_md=__doc__,
)
def dynamo_profiling():
    @task(execution_timeout=timedelta(minutes=2))
    def plan() -> dict:
        """One job per (model, GPU type, shard), grouped by the queue that must run it."""
        ctx = get_current_context()
        p = ctx["params"]
        campaign = p.get("campaign") or re.sub(r"[^A-Za-z0-9]+", "-", ctx["run_id"]).strip("-")[:48]
        return S.plan_jobs(p["models"], p["gpus"], int(p["shards"]), campaign, OWN_QUEUES, QUEUES)

    @task(execution_timeout=timedelta(minutes=2))
    def jobs_for(jobs: dict, queue: str) -> list[dict]:
        """The jobs of one queue (what its mapped shard task expands over)."""
        return jobs[queue]

    @task(retry_delay=timedelta(seconds=5))
    def shard(job: dict) -> dict:
        """Run one shard on this GPU node (resumes its partial file when retried)."""
        p = get_current_context()["params"]
        return S.run_job(common.settings(), job, p, root=os.environ.get("DYNAMO_PROFILES_ROOT"))

    @task(execution_timeout=timedelta(minutes=30), trigger_rule="none_failed")
    def merge(jobs: dict) -> list[dict]:
        """Merge each (model, GPU)'s shards into one profile version with provenance (runs when no
        shard failed: a queue with no job this run is skipped, not failed)."""
        return S.merge_jobs(common.settings(), [j for q in QUEUES for j in jobs[q]],
                            root=os.environ.get("DYNAMO_PROFILES_ROOT"))

    jobs = plan()
    mapped = []
    for q in QUEUES:
        name = q.replace("-", "_")
        mapped.append(shard.override(task_id=f"shard_{name}", queue=q)
                      .expand(job=jobs_for.override(task_id=f"jobs_{name}")(jobs, q)))
    m = merge(jobs)
    mapped >> m


dynamo_profiling()
