"""Stage 2: DDP GAN training with a Ray Train TorchTrainer (the per-worker side is in `ray_worker.py`)."""

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from prefect import task

from gan import data, metrics
from gan.config import check_recipe, warm_started
from gan.watchdog import TrainingDiverged
from pipelines import console, ray_job, warm_start
from pipelines.codebase import stage_code
from pipelines.config import ClusterUnavailable, PipelineConfig, fingerprint, is_uri
from pipelines.evaluate import class_mix, feature_classifier, feature_extractor_key, train_rows
from pipelines.ingest import check_batch_fits
from pipelines.ray_worker import train_loop_per_worker
from pipelines.runtime import RAY_RUN_RECORD, Workspace, ensure_ray, ray_storage, trains_as_job
from pipelines.stages import cache_key, failure_hook, is_storage_error, maybe_fail, naming, raise_naming, retry_unless_user_error
from pipelines.warm_start import Parent

# On CPUs, a worker's OpenMP threads spin between parallel regions instead of sleeping: a sleeping thread is
# woken late when Ray's own processes share the cores, and every op of the step waits for it (BENCHMARKS.md).
# The workers' thread counts never exceed the cores (ray_worker.py), so the spinning takes no one's core.
CPU_WORKER_ENV = {"OMP_WAIT_POLICY": "ACTIVE"}
BLOCK_BYTES = 16 * 2**20  # Ray Data's largest block: a few of them per read task and per training worker


def training_key(cfg: PipelineConfig) -> str:
    """What a run trains with besides its data and its parent: the recipe, the workers and the training code
    (`codebase.STAGES`). Not how the parent was named (train.init_from, train.init_missing): the parent itself counts."""
    train = cfg.train.model_dump(mode="json", exclude={"init_from", "init_missing"})
    return fingerprint(cfg.model, train, cfg.reg, cfg.optim, cfg.ray.num_workers, cfg.ray.use_gpu, stage_code("train"))


def run_name(cfg: PipelineConfig, manifest: dict, parent: dict | None = None) -> str:
    """Same data, same training, same parent (its state's digest; none for a cold start): same run, so a re-run resumes
    its checkpoints."""
    return "train-" + fingerprint(manifest["fingerprint"], training_key(cfg), parent and parent["digest"])


def run_config(cfg: PipelineConfig, parent: dict | None) -> PipelineConfig:
    """The config the workers train with: a warm start trains train.init_budget of the epochs and the time budget."""
    return cfg if parent is None else cfg.model_copy(update={"train": warm_started(cfg.train)})


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


def quick_fid_blob(cfg: PipelineConfig, dataset_dir: Path, manifest: dict) -> bytes | None:
    """The evaluation's feature classifier and the training images' feature statistics, as bytes for the workers
    (a remote cluster's workers do not see this machine's files); None when quick FIDs are off."""
    if not cfg.train.fid_every_epochs:
        return None
    key = feature_extractor_key(cfg, manifest)
    path = Workspace.of(cfg.runtime.workdir).classifiers / f"{key}-quickfid-{cfg.train.fid_samples}-{cfg.eval.seed}.pt"
    if not path.is_file():
        classifier, _ = feature_classifier(cfg, dataset_dir, manifest)
        feats, _ = metrics.embed(classifier, data.load_split(dataset_dir, "train", train_rows(cfg, manifest))[0])
        metrics.QuickFID(classifier, *metrics.gaussian_stats(feats), class_mix(manifest), cfg.train.fid_samples, cfg.eval.seed, key).save(path)
    return path.read_bytes()


def local_copy(checkpoint, workspace: Workspace, run: str) -> Path:  # noqa: ANN001 - a ray.train.Checkpoint
    """A checkpoint kept in remote storage, downloaded once into <workdir>/checkpoints/<run>/<its folder name>, beside
    the run's record: the later stages read a local folder, and lineage finds the run. Both appear by one rename."""
    out = workspace.checkpoints / run / PurePosixPath(checkpoint.path).name
    record = out.parent / f".tmp-{RAY_RUN_RECORD}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if not out.is_dir():
            data.remove_stale_temporaries(out.parent)
            with data.written_aside(out) as tmp:
                checkpoint.to_directory(str(tmp))
        with checkpoint.filesystem.open_input_stream(str(PurePosixPath(checkpoint.path).parent / RAY_RUN_RECORD)) as remote:
            record.write_bytes(remote.read())
        os.replace(record, out.parent / RAY_RUN_RECORD)
    except OSError as err:
        record.unlink(missing_ok=True)
        raise_naming(err, out)
    return out


def train(cfg: PipelineConfig, dataset_dir: str, parent: dict | None = None) -> dict:
    """Fit the GAN with a TorchTrainer on the dataset's train split, from scratch or warm-started from `parent` (a
    `warm_start.Parent`); return the final checkpoint and timings (with `ray.storage_path` a URI: a local copy of the
    checkpoint, and its URI as `checkpoint_uri`)."""
    import ray.data  # noqa: PLC0415
    import ray.train  # noqa: PLC0415
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    manifest = data.read_manifest(Path(dataset_dir))
    name, key = run_name(cfg, manifest, parent), training_key(cfg)  # of the config as given, before a warm start's budget
    init = None if parent is None else warm_start.state_file(cfg, Parent.of_dict(parent)).read_bytes()  # to every worker
    cfg = run_config(cfg, parent)
    image_shape = tuple(manifest["image_shape"])
    check_recipe(cfg.recipe, image_shape)
    check_batch_fits(cfg, manifest["rows"]["train"])
    workspace = Workspace.of(cfg.runtime.workdir)
    quick_fid = quick_fid_blob(cfg, Path(dataset_dir), manifest)
    started = time.time()
    ensure_ray()
    ray_ready = time.time()

    resources = {"CPU": cfg.ray.cpus_per_worker, **({"GPU": 1} if cfg.ray.use_gpu else {}), **cfg.ray.worker_resources}
    # Ray Data's read tasks and the workers' iterators each hold a few blocks: blocks of up to 16 MiB (not 128), read
    # by Ray Data's first Parquet reader, whose read tasks stayed the same size from 60k to 240k images where the
    # newer reader's grew by half. So their memory stops growing with the data set (BENCHMARKS.md, a whole run by size).
    data_context = ray.data.DataContext.get_current()
    data_context.target_max_block_size, data_context.use_datasource_v2 = BLOCK_BYTES, False
    storage = ray_storage(cfg.ray.storage_path, workspace)
    run_dir = f"{storage.rstrip('/')}/{name}"  # Ray Train's run folder: <storage_path>/<name>/checkpoint_<time>
    print(f"[train] {cfg.model.arch} on {cfg.ray.num_workers} workers, run {name}")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"), "image_shape": list(image_shape), "num_classes": manifest["num_classes"],
            "steps_per_epoch": manifest["rows"]["train"] // cfg.ray.num_workers // cfg.train.batch_size,
            "quick_fid": quick_fid, "failure_hooks": failure_hook(), "init": init,
            # Kept beside every checkpoint (checkpoint.LINEAGE_FILE): the registry tags the version with it.
            "lineage": {"run": name, "training_key": key, "dataset_fingerprint": manifest["fingerprint"], "warm_start": parent},
        },
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures, controller_failure_limit=cfg.ray.placement_retries),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": {} if cfg.ray.use_gpu else CPU_WORKER_ENV},
        ),
        datasets={"train": ray.data.read_parquet(str(Path(dataset_dir) / "train"))},
        # Blocks reach the workers in file order: the same rows on the same rank in every run, so a resumed run
        # trains on what the uninterrupted one would have.
        dataset_config=ray.train.DataConfig(execution_options=ray.data.ExecutionOptions(preserve_order=True)),
    )
    try:
        with console.training(cfg.train.epochs, console.task_logger()):
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


@task(name="warm-start", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error)
def warm_start_task(cfg: PipelineConfig, dataset_dir: str) -> dict | None:
    """train.init_from -> the parent to warm-start from (its training state on this machine), checked against the data;
    None for a cold start. Not cached: an alias such as @champion names another version once the champion moves."""
    manifest = data.read_manifest(Path(dataset_dir))
    parent = warm_start.resolve(cfg, tuple(manifest["image_shape"]), manifest["num_classes"], manifest["fingerprint"], training_key(cfg))
    return None if parent is None else parent.as_dict()


def _key(context, parameters: dict) -> str:  # noqa: ANN001
    cfg: PipelineConfig = parameters["cfg"]
    manifest = data.read_manifest(Path(parameters["dataset_dir"]))
    return cache_key("train", run_name(cfg, manifest, parameters.get("parent")), Workspace.of(cfg.runtime.workdir).root)


@task(name="train", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error,
      cache_key_fn=_key, persist_result=True, result_serializer="json")
def train_task(cfg: PipelineConfig, dataset_dir: str, parent: dict | None = None) -> dict:
    """Dataset (and a parent to warm-start from) -> trained checkpoint (cached on dataset fingerprint + train config +
    training code + parent); the driver runs here, or on the cluster as a Ray Job (`ray.driver`)."""
    maybe_fail("train")
    if trains_as_job(cfg):
        return ray_job.train_as_job(cfg, dataset_dir, run_name(cfg, data.read_manifest(Path(dataset_dir)), parent), parent)
    return train(cfg, dataset_dir, parent)
