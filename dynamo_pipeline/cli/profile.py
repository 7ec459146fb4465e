"""`dynamo profile`: measure an energy-performance profile (thin wrapper over
:func:`dynamo_pipeline.profiling.run_profile`)."""

from __future__ import annotations

import click

from dynamo_pipeline.cli import main
from dynamo_pipeline.cli.common import Context, fail, pass_ctx
from dynamo_pipeline.hardware import GPUS, MODELS, HardwareError, make_backend


def _ints(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        return tuple(int(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated integers, e.g. 1200,1600,1980") from None


@main.group(invoke_without_command=True)
@click.option("--backend", type=click.Choice(["sim", "nvml"]), default="sim", show_default=True,
              help="sim: the simulated server (no GPU needed). nvml: a real engine at --url, clocks locked "
                   "and energy read by NVML on this node.")
@click.option("--model", default=None, help=f"Model card (default: hardware.model). Known: {', '.join(MODELS)}.")
@click.option("--gpu", default=None, help=f"GPU card (default: hardware.gpu). Known: {', '.join(GPUS)}.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Profiles folder (default: the repository's profiles/); writes <root>/<gpu>/<model>.csv.")
@click.option("--requests", "n_requests", default=600, show_default=True, help="Requests per grid point.")
@click.option("--min-duration", "min_duration_s", default=300.0, show_default=True,
              help="Seconds the arrivals of a grid point span at least (more requests at high rates), so that a "
                   "rate the instance cannot sustain shows its growing queue.")
@click.option("--seed", default=0, show_default=True, help="Seed of the request streams.")
@click.option("--tp", "tp", default=None, help="TP degrees, comma-separated (default: those that fit).")
@click.option("--clocks", default=None, help="SM clocks in MHz, comma-separated (default: the GPU card's grid).")
@click.option("--classes", "class_names", default=None, help="Classes, comma-separated (default: all nine).")
@click.option("--url", default=None, help="nvml: base URL of the engine's OpenAI-compatible API, e.g. http://127.0.0.1:8000.")
@click.option("--served-model", default=None, help="nvml: model name the engine serves (default: --model).")
@click.option("--gpus", "gpu_ids", default=None, help="nvml: GPU indices the engine runs on, e.g. 0,1,2,3.")
@click.option("--store/--no-store", "use_store", default=True, show_default=True,
              help="Also write the rows to the store's profiles table (needs `dynamo db upgrade`).")
@click.option("--lengths-from", "lengths_from", type=click.Path(dir_okay=False), default=None,
              help="A trace of the workload (Azure CSV, or CSV/Parquet with t_s|arrived_at, input_tokens, "
                   "output_tokens): each class's requests take (input, output) lengths drawn from the trace's "
                   "requests of that class instead of log-uniform in the bins. Write it beside the default "
                   "profile with --root, e.g. --root profiles/workloads/<name>.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on).")
@click.option("--shard", default=None, help="Run only shard K/N of the grid (classes split round-robin), e.g. 2/4; "
              "needs --campaign and the store. Merge with `dynamo profile merge`.")
@click.option("--campaign", default=None, help="With --shard: the fan-out's name, the same for all its shards.")
@pass_ctx
def profile(ctx: Context, backend: str, model: str | None, gpu: str | None, root: str | None, n_requests: int,
            min_duration_s: float, seed: int, tp: str | None, clocks: str | None, class_names: str | None, url: str | None,
            served_model: str | None, gpu_ids: str | None, use_store: bool, lengths_from: str | None,
            progress: bool | None, shard: str | None, campaign: str | None) -> None:
    """Measure the grid class x TP x clock x load and write profiles/<gpu>/<model>.csv.

    Each point serves a Poisson stream of one class's requests on one instance and records
    throughput, P50/P99 TTFT and TBT, power and energy per request, with provenance (source,
    package versions; the store adds run id, backend and time). An interrupted run resumes where
    it stopped when started again with the same options.

    \b
    Examples:
      dynamo profile --backend sim --model Llama-2-70B --gpu H100-SXM
      dynamo profile --lengths-from samples/azure_llm_2023/AzureLLMInferenceTrace_conv.csv.gz \\
           --root profiles/workloads/azure-conv-2023 --no-store
      sudo dynamo profile --backend nvml --model Llama-2-70B --gpu H100-SXM \\
           --url http://127.0.0.1:8000 --gpus 0,1,2,3 --tp 4
    """
    if click.get_current_context().invoked_subcommand:
        return
    from dynamo_pipeline.profiling import SimRunner, run_profile
    from dynamo_pipeline.profiling.http_runner import HttpRunner
    from dynamo_pipeline.profiling.shards import ShardError, parse_shard, run_shard

    s = ctx.settings
    model, gpu = model or s.hardware.model, gpu or s.hardware.gpu
    if model not in MODELS or gpu not in GPUS:
        fail(f"unknown model {model!r} or GPU {gpu!r}; known models {sorted(MODELS)}, GPUs {sorted(GPUS)}")
    tps, clk = _ints(tp), _ints(clocks)
    names = tuple(class_names.split(",")) if class_names else None
    if names and set(names) - set(s.classes.names()):
        fail(f"unknown classes {sorted(set(names) - set(s.classes.names()))}; use some of {s.classes.names()}")
    lengths = None
    if lengths_from:
        from pathlib import Path

        from dynamo_pipeline.profiling.grid import MIN_POOL, LengthPools
        from dynamo_pipeline.sim.trace import TraceError, read_trace_file
        try:
            lengths = LengthPools.from_trace(read_trace_file(lengths_from, s), s, Path(lengths_from).name)
        except TraceError as e:
            fail(f"--lengths-from: {e}")
        if not lengths.pairs:
            fail(f"--lengths-from {lengths_from}: no class has {MIN_POOL} requests; give a longer trace")
        missing = [c for c in s.classes.names() if c not in lengths.pairs]
        click.echo(f"lengths from {lengths_from}: " + ", ".join(f"{k} {v:,}" for k, v in lengths.counts().items())
                   + (f"; log-uniform for {', '.join(missing)} (fewer than {MIN_POOL} requests)" if missing else ""))
    try:
        if backend == "sim":
            runner = SimRunner(model, gpu)
        else:
            ids = _ints(gpu_ids)
            if not url or not ids:
                fail("--backend nvml needs --url (the engine's OpenAI-compatible API) and --gpus (its GPU indices)")
            hw = make_backend("nvml")
            runner = HttpRunner(hw, url, served_model or model, list(ids), model_card=model, gpu_card=gpu)
            tps = tps or (len(ids),)
        store = ctx.store() if use_store else None
        if shard:
            if not campaign or store is None:
                fail("--shard needs --campaign NAME (the same for every shard) and the store (drop --no-store)")
            k, n = parse_shard(shard)
            sr = run_shard(runner, s, gpu, model, campaign, k, n, store=store, root=root, classes=names, seed=seed,
                           n_requests=n_requests, min_duration_s=min_duration_s, tp_degrees=tps, clocks_mhz=clk, progress=progress,
                           backend_name=backend, lengths=lengths)
            click.echo(f"shard {sr.shard} of {campaign} ({','.join(sr.classes)}): {sr.points} points "
                       f"({sr.points_measured} measured, {sr.points_resumed} resumed), run {sr.run_id}")
            return
        res = run_profile(runner, s, gpu, model, root=root, store=store, seed=seed, n_requests=n_requests,
                          min_duration_s=min_duration_s, tp_degrees=tps, clocks_mhz=clk, classes=names,
                          progress=progress, backend_name=backend, lengths=lengths)
    except (HardwareError, ShardError, ValueError, KeyError) as e:
        fail(str(e))
    click.echo(f"{res.path}: {len(res.frame)} points ({res.points_measured} measured, {res.points_skipped} "
               f"resumed), run {res.run_id}")


@profile.command("merge")
@click.option("--campaign", required=True, help="The fan-out's name given to its shards.")
@click.option("--shards", "n", type=int, required=True, help="N, the number of shards of the campaign.")
@click.option("--model", default=None, help="Model card (default: hardware.model).")
@click.option("--gpu", default=None, help="GPU card (default: hardware.gpu).")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Profiles folder (default: profiles/).")
@pass_ctx
def merge(ctx: Context, campaign: str, n: int, model: str | None, gpu: str | None, root: str | None) -> None:
    """Merge the N shards of a campaign (read from the store) into profiles/<gpu>/<model>.csv and
    one profile version named after the campaign, with provenance beside the CSV."""
    from dynamo_pipeline.profiling.shards import ShardError, merge_shards

    s = ctx.settings
    model, gpu = model or s.hardware.model, gpu or s.hardware.gpu
    try:
        prov = merge_shards(ctx.store(), gpu, model, campaign, n, root=root)
    except ShardError as e:
        fail(str(e))
    click.echo(f"{prov.get('path', gpu + '/' + model)}: {prov['points']} points, profile version {campaign}")
