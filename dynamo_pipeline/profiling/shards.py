"""Profiling fan-out: split a profile's grid into N shards, run one shard, merge the shards.

The unit of a shard is the request class: shard ``k`` of ``n`` (1-based) takes the classes
``names[k-1::n]`` of the configured order, so the split is deterministic and every class lands in
exactly one shard. Load levels and request streams are seeded per (class, TP, load level) (see
:mod:`dynamo_pipeline.profiling.grid`), so the shards of a campaign measure exactly the points one
unsharded run would.

A *campaign* names one fan-out. Shard ``k/n`` of campaign ``C`` runs :func:`run_profile` with run id
``C-s<k>of<n>`` under ``<root>/.shards/C/s<k>of<n>/`` (resumable through its ``.csv.partial``: a
retried shard skips the points it already wrote) and writes its rows to the store under that run
id. The store is the hand-off: shards run on GPU nodes, the merge runs anywhere that reaches the
store. :func:`merge_shards` reads the ``n`` shard runs, refuses a campaign with a missing or
unfinished shard, writes ``profiles/<gpu>/<model>.csv`` and one profile version ``C`` in the store
(backend ``<backend>+merge``), records the provenance (shard run ids, points per shard, spec) in
``<model>.csv.provenance.json``, and drops the per-shard rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import delete, func, select

from dynamo_pipeline.config import Settings
from dynamo_pipeline.profiling.job import Runner, run_profile
from dynamo_pipeline.profiling.writer import KEY_COLUMNS, PROFILE_COLUMNS, ROOT, profile_path, read_rows, write_rows
from dynamo_pipeline.store import Store


class ShardError(ValueError):
    """A shard spec that does not fit the grid, or a campaign that cannot be merged yet."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ShardError(f"shard {text!r}: write it as K/N, e.g. 2/4") from None
    if not 1 <= k <= n:
        raise ShardError(f"shard {text!r}: K must be between 1 and N")
    return k, n


def shard_classes(names: tuple[str, ...] | list[str], k: int, n: int) -> tuple[str, ...]:
    """The classes of shard ``k`` of ``n`` (1-based): every n-th class from the k-th."""
    names = tuple(names)
    if n > len(names):
        raise ShardError(f"{n} shards for {len(names)} classes: use at most {len(names)} shards")
    if not 1 <= k <= n:
        raise ShardError(f"shard {k}/{n}: K must be between 1 and N")
    return names[k - 1::n]


def shard_run_id(campaign: str, k: int, n: int) -> str:
    return f"{campaign}-s{k}of{n}"


@dataclass
class ShardResult:
    campaign: str
    gpu: str
    model: str
    shard: str
    run_id: str
    classes: list[str]
    points: int
    points_measured: int
    points_resumed: int


def run_shard(runner: Runner, settings: Settings, gpu: str, model: str, campaign: str, k: int, n: int, *,
              store: Store, root=None, classes: tuple[str, ...] | None = None, **grid) -> ShardResult:
    """Run shard ``k`` of ``n`` of ``campaign`` (resumable) and write its rows to the store.
    ``grid`` passes through to :func:`run_profile` (seed, n_requests, tp_degrees, clocks_mhz, ...)
    and must be the same for every shard of a campaign."""
    mine = shard_classes(classes or settings.classes.names(), k, n)
    rid = shard_run_id(campaign, k, n)
    shard_root = Path(root or ROOT) / ".shards" / campaign / f"s{k}of{n}"
    res = run_profile(runner, settings, gpu, model, root=shard_root, store=store, classes=mine, run_id=rid,
                      backend_name=grid.pop("backend_name", runner.source), **grid)
    if res.run_id != rid:  # an older partial with the same spec but another run id was resumed
        write_rows(store, res.frame, rid, runner.source)
    return ShardResult(campaign, gpu, model, f"{k}/{n}", rid, list(mine), len(res.frame), res.points_measured,
                       res.points_skipped)


def merge_shards(store: Store, gpu: str, model: str, campaign: str, n: int, *, root=None) -> dict:
    """Merge the ``n`` shards of ``campaign`` into ``profiles/<gpu>/<model>.csv`` and profile
    version ``campaign`` in the store; returns the provenance record (also written beside the CSV)."""
    from dynamo_pipeline.store.tables.profiles import ProfileRow

    ids = [shard_run_id(campaign, k, n) for k in range(1, n + 1)]
    with store.session() as s:
        counts = dict(s.execute(select(ProfileRow.profile_version, func.count()).where(
            ProfileRow.gpu == gpu, ProfileRow.model == model, ProfileRow.profile_version.in_(ids))
            .group_by(ProfileRow.profile_version)).all())
        backends = set(s.execute(select(ProfileRow.backend).where(ProfileRow.profile_version.in_(ids))).scalars())
    already = read_rows(store, gpu, model, campaign)
    if not counts and len(already):
        return {"profile_version": campaign, "gpu": gpu, "model": model, "shards": n, "points": len(already),
                "already_merged": True}
    missing = [i for i in ids if i not in counts]
    if missing:
        raise ShardError(f"campaign {campaign} for {gpu}/{model}: no rows for shard(s) {missing} in the store; "
                         "run them (dynamo profile --shard K/N --campaign ...) and merge again")
    frames = [read_rows(store, gpu, model, i) for i in ids]
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(KEY_COLUMNS)
    if dup.any():
        raise ShardError(f"campaign {campaign}: {int(dup.sum())} grid points measured by two shards; the shards "
                         "were run with different grids — run the campaign again under a new name")
    df = df.sort_values(KEY_COLUMNS).reset_index(drop=True)[PROFILE_COLUMNS]
    backend = "+".join(sorted(backends)) + "+merge"
    write_rows(store, df, campaign, backend[:16])
    with store.session() as s, s.begin():
        s.execute(delete(ProfileRow).where(ProfileRow.profile_version.in_(ids)))
    path = profile_path(gpu, model, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.6g")
    prov = {"profile_version": campaign, "gpu": gpu, "model": model, "shards": n, "backend": backend,
            "points": len(df), "shard_runs": {i: int(counts[i]) for i in ids}, "path": str(path)}
    path.with_name(f"{model}.csv.provenance.json").write_text(json.dumps(prov, indent=1))
    return prov


__all__ = ["ShardError", "ShardResult", "parse_shard", "shard_classes", "shard_run_id", "run_shard", "merge_shards"]


# -- the fan-out as jobs (the profiling DAG's tasks call these; see dags/dynamo_profiling.py) --------

def gpu_queue(gpu: str, own_queues: tuple[str, ...] | list[str] = ()) -> str:
    """The Celery queue of a GPU type: ``gpu-<type>`` when it has its own queue, else ``gpu``."""
    return f"gpu-{gpu}" if gpu in own_queues else "gpu"


def plan_jobs(models: list[str], gpus: list[str], n: int, campaign: str, own_queues=(), queues=("gpu",)) -> dict:
    """Jobs ``{model, gpu, shard: "K/N", campaign}`` grouped by queue (every queue in ``queues``
    gets a list, possibly empty)."""
    from dynamo_pipeline.hardware import GPUS, MODELS

    unknown = sorted(set(models) - set(MODELS)) + sorted(set(gpus) - set(GPUS))
    if unknown:
        raise ShardError(f"unknown model or GPU cards {unknown}; known models {sorted(MODELS)}, GPUs {sorted(GPUS)}")
    out: dict[str, list[dict]] = {q: [] for q in queues}
    for model in models:
        for gpu in gpus:
            for k in range(1, n + 1):
                out.setdefault(gpu_queue(gpu, own_queues), []).append(
                    {"model": model, "gpu": gpu, "shard": f"{k}/{n}", "campaign": campaign})
    return out


def make_runner(backend: str, model: str, gpu: str, *, url: str | None = None, gpu_ids=None,
                served_model: str | None = None) -> Runner:
    """The runner of a backend: ``sim`` (simulated server) or ``nvml`` (an engine at ``url``)."""
    from dynamo_pipeline.profiling.job import SimRunner

    if backend == "sim":
        return SimRunner(model, gpu)
    if backend != "nvml":
        raise ShardError(f"unknown profiling backend {backend!r}; use sim or nvml")
    if not url or not gpu_ids:
        raise ShardError("backend nvml needs the engine's URL and its GPU indices (params engine_url, gpu_ids)")
    from dynamo_pipeline.hardware import make_backend
    from dynamo_pipeline.profiling.http_runner import HttpRunner

    return HttpRunner(make_backend("nvml"), url, served_model or model, list(gpu_ids), model_card=model, gpu_card=gpu)


def run_job(settings: Settings, job: dict, params: dict, *, root=None) -> dict:
    """Run one planned shard job with the run's params (see :data:`dags.dynamo_profiling.PARAMS`)."""
    from dataclasses import asdict

    from dynamo_pipeline.store import open_store

    k, n = parse_shard(job["shard"])
    runner = make_runner(params.get("backend", "sim"), job["model"], job["gpu"], url=params.get("engine_url"),
                         gpu_ids=params.get("gpu_ids"))
    store = open_store(settings.database_url)
    try:
        res = run_shard(runner, settings, job["gpu"], job["model"], job["campaign"], k, n, store=store, root=root,
                        classes=tuple(params["classes"]) if params.get("classes") else None,
                        n_requests=int(params.get("n_requests") or 600), progress=False,
                        tp_degrees=tuple(params["tp"]) if params.get("tp") else None,
                        clocks_mhz=tuple(params["clocks_mhz"]) if params.get("clocks_mhz") else None,
                        backend_name=params.get("backend", "sim"))
    finally:
        store.dispose()
    return asdict(res)


def merge_jobs(settings: Settings, jobs: list[dict], *, root=None) -> list[dict]:
    """Merge every (model, GPU, campaign) of ``jobs``; returns their provenance records."""
    from dynamo_pipeline.store import open_store

    groups = sorted({(j["model"], j["gpu"], j["campaign"], parse_shard(j["shard"])[1]) for j in jobs})
    store = open_store(settings.database_url)
    try:
        return [merge_shards(store, gpu, model, campaign, n, root=root) for model, gpu, campaign, n in groups]
    finally:
        store.dispose()
