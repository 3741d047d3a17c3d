"""The training driver: a Ray Train TorchTrainer over the dataset's Parquet shards, each worker running
`cluster/worker.py`; Ray Train's failures turned into the one line a user needs. Runs in the stage's process or, as a
Ray Job, on the cluster (`cluster/job_main.py`)."""

import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from gan import files
from gan.config import check_recipe
from gan.data.manifest import read_manifest
from gan.watchdog import TrainingDiverged
from pipelines import console
from pipelines.cluster.ray import RAY_RUN_RECORD, ensure_ray
from pipelines.cluster.worker import train_loop_per_worker
from pipelines.config import PipelineConfig, check_batch_fits, is_uri, shard_loader
from pipelines.errors import ClusterUnavailable, is_storage_error, naming, raise_naming
from pipelines.faults import failure_hook, nan_at_step
from pipelines.workspace import Workspace, ray_storage

# On CPUs, a worker's OpenMP threads spin between parallel regions instead of sleeping: a sleeping thread is
# woken late when Ray's own processes share the cores, and every op of the step waits for it (BENCHMARKS.md).
# The workers' thread counts never exceed the cores (ray_worker.py), so the spinning takes no one's core.
CPU_WORKER_ENV = {"OMP_WAIT_POLICY": "ACTIVE"}
BLOCK_BYTES = 16 * 2**20  # Ray Data's largest block: a few of them per read task and per training worker


def failure_cause(
    err: BaseException, kind: type[BaseException] | tuple, where: Callable[[BaseException], bool] | None = None
) -> BaseException | None:
    """The exception of that kind inside Ray Train's error (e.g. the watchdog's TrainingDiverged on a worker), if any;
    with `where`, the first one of them it holds for."""
    seen, todo = set(), [err, *getattr(err, "worker_failures", {}).values()]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind) and (where is None or where(e)):
            return e
        todo += [
            e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "controller_failure", None),
            *getattr(e, "worker_failures", {}).values(),
        ]
    return None


def placement_failure(err: BaseException, cfg: PipelineConfig, resources: dict, run_dir: str) -> ClusterUnavailable | None:
    """Ray Train's start-up timeout, as the one line a user needs: what could not be placed, and that a re-run resumes."""
    from ray.train.v2._internal.exceptions import InsufficientClusterResourcesError, WorkerGroupStartupTimeoutError  # noqa: PLC0415

    cause = failure_cause(err, (WorkerGroupStartupTimeoutError, InsufficientClusterResourcesError))
    if cause is None:
        return None
    tries = cfg.ray.placement_retries + 1
    why = str(cause).split(". ")[0]
    return ClusterUnavailable(
        f"the Ray cluster could not place {cfg.ray.num_workers} training workers needing {resources} each ({tries} "
        f"tr{'y' if tries == 1 else 'ies'}; {why[:1].lower()}{why[1:]}): a node was lost or the cluster is too small "
        "(ray.placement_retries waits longer). "
        f"The checkpoints are kept in {run_dir}: run again when the cluster has room and training resumes from the latest one"
    )


def storage_failure(err: BaseException, run_dir: str) -> OSError | None:
    """A worker that could not write its checkpoint (a full disk, a read-only or forbidden folder), naming what it wrote."""
    cause = failure_cause(err, OSError, is_storage_error)
    return None if cause is None else naming(cause, run_dir)


def local_copy(checkpoint, workspace: Workspace, run: str) -> Path:  # noqa: ANN001 - a ray.train.Checkpoint
    """A checkpoint kept in remote storage, downloaded once into <workdir>/checkpoints/<run>/<its folder name>, beside
    the run's record: the later stages read a local folder, and lineage finds the run. Both appear by one rename."""
    out = workspace.checkpoints / run / PurePosixPath(checkpoint.path).name
    try:
        if not out.is_dir():
            files.remove_stale_temporaries(out.parent)
            with files.written_aside(out) as tmp:
                checkpoint.to_directory(str(tmp))
        remote_record = str(PurePosixPath(checkpoint.path).parent / RAY_RUN_RECORD)
        with checkpoint.filesystem.open_input_stream(remote_record) as remote, files.replacing(out.parent / RAY_RUN_RECORD) as record:
            record.write_bytes(remote.read())
    except OSError as err:
        raise_naming(err, out)
    return out


def worker_resources(cfg: PipelineConfig) -> dict[str, float]:
    """What each worker asks of the cluster: its CPUs, one GPU with `ray.use_gpu`, and any custom resources."""
    return {"CPU": cfg.ray.cpus_per_worker, **({"GPU": 1} if cfg.ray.use_gpu else {}), **cfg.ray.worker_resources}


def worker_env(cfg: PipelineConfig) -> dict[str, str]:
    """The workers' environment: OpenMP's threads spin between the small CPU kernels; on GPUs nothing is set."""
    return {} if cfg.ray.use_gpu else CPU_WORKER_ENV


def ray_data_split(dataset_dir: str) -> dict:
    """The TorchTrainer's arguments for Ray Data's streaming split of the train split (`ray.loader`: ray-data)."""
    import ray.data  # noqa: PLC0415
    import ray.train  # noqa: PLC0415

    # Ray Data's read tasks and the workers' iterators each hold a few blocks: blocks of up to 16 MiB (not 128), read
    # by Ray Data's first Parquet reader, whose read tasks stayed the same size from 60k to 240k images where the
    # newer reader's grew by half. So their memory stops growing with the data set (BENCHMARKS.md, a whole run by size).
    data_context = ray.data.DataContext.get_current()
    data_context.target_max_block_size, data_context.use_datasource_v2 = BLOCK_BYTES, False
    return {
        "datasets": {"train": ray.data.read_parquet(str(Path(dataset_dir) / "train"))},
        # Blocks reach the workers in file order: the same rows on the same rank in every run, so a resumed run
        # trains on what the uninterrupted one would have.
        "dataset_config": ray.train.DataConfig(execution_options=ray.data.ExecutionOptions(preserve_order=True)),
    }


def fit(cfg: PipelineConfig, dataset_dir: str, name: str, lineage: dict, init_path: str | None = None, quick_fid_path: str | None = None,
        logger: object = None) -> dict:
    """Fit the GAN with a TorchTrainer on the dataset's train split as Ray Train run `name`, from scratch or warm-started
    from the parent state at `init_path`, with quick FIDs from `quick_fid_path` (both files every worker gets as bytes);
    return the final checkpoint and timings (with `ray.storage_path` a URI: a local copy of the checkpoint, and its URI as
    `checkpoint_uri`). `lineage` is written beside every checkpoint; `logger` also gets the epoch lines."""
    import ray.train  # noqa: PLC0415
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    manifest = read_manifest(Path(dataset_dir))
    image_shape = tuple(manifest["image_shape"])
    check_recipe(cfg.recipe, image_shape)
    check_batch_fits(cfg, manifest["rows"]["train"])
    workspace = Workspace.of(cfg.runtime.workdir)
    init, quick_fid = (None if path is None else Path(path).read_bytes() for path in (init_path, quick_fid_path))
    started = time.time()
    ensure_ray(cfg.ray.dashboard)
    ray_ready = time.time()

    resources, loader = worker_resources(cfg), shard_loader(cfg)
    storage = ray_storage(cfg.ray.storage_path, workspace)
    run_dir = f"{storage.rstrip('/')}/{name}"  # Ray Train's run folder: <storage_path>/<name>/checkpoint_<time>
    print(f"[train] {cfg.model.arch} on {cfg.ray.num_workers} workers, run {name}")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"), "image_shape": list(image_shape), "num_classes": manifest["num_classes"],
            "steps_per_epoch": manifest["rows"]["train"] // cfg.ray.num_workers // cfg.worker_batch, "num_images": manifest["rows"]["train"],
            "quick_fid": quick_fid, "failure_hooks": failure_hook(), "nan_at_step": nan_at_step(), "init": init,
            "lineage": lineage,  # kept beside every checkpoint (checkpoint.LINEAGE_FILE): the registry tags the version with it
            "dataset_dir": str(Path(dataset_dir).resolve()) if loader == "parquet" else None,  # each worker reads its rows itself
        },
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu, resources_per_worker=resources),
        # With GPUs, Ray Train gives each worker its own (`ray.train.torch.get_device`) and a NCCL process group.
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures, controller_failure_limit=cfg.ray.placement_retries),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": worker_env(cfg)},
        ),
        **(ray_data_split(dataset_dir) if loader == "ray-data" else {}),
    )
    try:
        with console.training(None if cfg.train.max_minutes else cfg.train.epochs, logger):  # a budget: its epochs known after the first
            result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        # The watchdog's verdict or a placement failure, in one line: not Ray's wrapper with every worker's traceback.
        plain = (failure_cause(err, TrainingDiverged) or placement_failure(err, cfg, resources, run_dir)
                 or storage_failure(err, run_dir))
        if plain is not None:
            raise plain from None
        raise
    finished = time.time()
    assert result.checkpoint is not None, f"run {name} finished without a checkpoint"
    metrics = result.metrics
    if is_uri(storage):
        where = {"checkpoint": str(local_copy(result.checkpoint, workspace, name)),
                 "checkpoint_uri": f"{run_dir}/{PurePosixPath(result.checkpoint.path).name}"}
    else:
        where = {"checkpoint": result.checkpoint.path}
    return {
        **where,
        "ray_start_seconds": ray_ready - started,
        "fit_seconds": finished - ray_ready,
        "to_first_step_seconds": metrics["first_batch_unix"] - ray_ready if metrics.get("first_batch_unix") else None,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }
