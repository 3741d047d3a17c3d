"""The Ray Train adapter: what runs on each worker, between Ray Train and `gan.training_loop`.

Kept free of Prefect and MLflow imports: every worker process imports this module.
"""

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from gan import checkpoint as ckpt
from gan.batches import Batch, in_memory_batches, mirrored
from gan.config import TrainConfig, device_batch
from gan.data.manifest import read_manifest
from gan.data.reader import decode_images, load_split
from gan.distributed import WorkerContext, gather, rank_seed
from gan.images import save_grid
from gan.metrics.quick_fid import QuickFID
from gan.training_loop import train as train_loop
from pipelines.config import PipelineConfig
from pipelines.errors import raise_naming
from pipelines.faults import InjectedFailure

SAMPLES = "samples"
REGISTERED_WAIT_S = 300.0  # how long a hook waits for the controller to register the checkpoint it fires after


class RayTrainSink:
    """Rank 0's samples go to a staging folder; every epoch each rank reports, rank 0 with the checkpoint (and beside it
    the run's lineage: its name, training key, data and parent)."""

    def __init__(self, ctx: WorkerContext, staging: Path, hooks: dict[str, int | str | None], resumed_epoch: int, lineage: dict):
        self.ctx, self.staging, self.lineage = ctx, staging, lineage
        epochs = {name: arg for name, arg in hooks.items() if isinstance(arg, int)}  # `train`, `train:once`: the driver's, at the start
        self.fail_after_epoch, self.kill_after_epoch = epochs.get("train"), epochs.get("kill-worker")
        self.resumed_epoch = resumed_epoch
        self.first_batch_unix: float | None = None

    def log(self, step: int, stats: dict[str, float]) -> None:
        pass  # logged stats travel in the checkpoint's history; MLflow gets them at the register stage

    def samples(self, step: int, images: torch.Tensor) -> None:
        save_grid(images, self.staging / SAMPLES / f"step_{step:07d}.png")

    def epoch_end(self, epoch: int, metrics: dict[str, float], state) -> None:  # noqa: ANN001
        import ray.train  # noqa: PLC0415

        metrics = {**metrics, "first_batch_unix": self.first_batch_unix or 0.0, "resumed_from_epoch": self.resumed_epoch}
        if state is not None and self.ctx.is_main:
            with tempfile.TemporaryDirectory() as tmp:
                ckpt.save(state(), Path(tmp))
                shutil.copytree(self.staging / SAMPLES, Path(tmp) / SAMPLES, dirs_exist_ok=True)
                (Path(tmp) / "metrics.json").write_text(json.dumps(metrics, indent=2))
                (Path(tmp) / ckpt.LINEAGE_FILE).write_text(json.dumps(self.lineage, indent=2))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_upload_fn=upload_whole)
        else:
            ray.train.report(metrics, checkpoint=None)  # every rank reports equally often, or the run hangs

    def batch_start(self, epoch: int, index: int, registered: Callable[[int], bool] | None = None) -> None:
        """The failure hooks fire at the first batch after epoch N's checkpoint, once Ray Train's controller has registered
        that checkpoint (`registered(N)`, by default `controller_has_checkpoint`): rank 0 raises (`train:N`) or the last
        rank SIGKILLs its own process (`kill-worker:N`). The restored group then gets epoch N's checkpoint from
        `ray.train.get_checkpoint()` and goes on past the hook, so it fires once, however fast the machine. (A worker lost
        between a report and its registration costs more: the group restarts from the checkpoint before.)"""
        if index != 0 or self.resumed_epoch >= epoch:
            return
        crash = epoch == self.fail_after_epoch and self.ctx.is_main
        kill = epoch == self.kill_after_epoch and self.ctx.rank == self.ctx.world_size - 1
        if not (crash or kill):
            return
        wait_until(lambda: (registered or controller_has_checkpoint)(epoch), REGISTERED_WAIT_S, f"the checkpoint of epoch {epoch} registered")
        if crash:
            raise InjectedFailure(f"train: crash injected after the checkpoint of epoch {epoch}")
        print(f"[train] rank {self.ctx.rank}: SIGKILL injected in epoch {epoch + 1}, after the checkpoint of epoch {epoch}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def wait_until(event: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `event` until it holds; an AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not event():
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}"
        time.sleep(0.1)


def controller_has_checkpoint(epoch: int) -> bool:
    """Whether Ray Train's controller has registered this run's checkpoint of `epoch` (or a later one): its checkpoint
    manager's snapshot in the run's storage, which it writes as it registers a checkpoint and reads to restore a group,
    names it as the latest. (A file of Ray Train's own, read here only to time the fault hooks.)"""
    import ray.train  # noqa: PLC0415

    storage = ray.train.get_context().get_storage()
    try:
        with storage.storage_filesystem.open_input_stream(storage.checkpoint_manager_snapshot_path) as f:
            latest = json.loads(f.read().decode()).get("latest_checkpoint_result") or {}
    except (OSError, ValueError):  # not written yet, or being written
        return False
    return int(latest.get("metrics", {}).get("epoch", 0)) >= epoch


def upload_whole(checkpoint, name: str):  # noqa: ANN001, ANN201 - ray.train.Checkpoints
    """Ray Train's own upload of a checkpoint into the run's storage, except that a failed one (a full disk) removes the
    folder it had begun: an orphan that no resumed run would read and that holds the space a re-run needs."""
    import ray.train  # noqa: PLC0415

    storage = ray.train.get_context().get_storage()
    try:
        return storage.persist_current_checkpoint(checkpoint, name)
    except OSError as err:
        folder = storage.build_checkpoint_path_from_name(name)
        with contextlib.suppress(OSError):
            storage.storage_filesystem.delete_dir(folder)
        raise_naming(err, folder)


def shard_batches(shard, train_cfg: TrainConfig, image_shape: tuple[int, ...], ctx: WorkerContext) -> Callable[[int], Iterator[Batch]]:  # noqa: ANN001
    """Batches (images [N, C, H, W] uint8, labels [N] int64) of this worker's Ray Data shard, for a given epoch.

    With `cache_shard`, the shard is streamed once and then reshuffled in memory every epoch: re-running
    the Ray Data pipeline costs seconds per epoch, more than a small data set's whole epoch of training. Its batch
    count is then known before the first step, and checked equal on every rank (`check_equal_batches`).
    """
    in_memory, rank = None, ctx.rank

    def stream(epoch: int) -> Iterator[Batch]:
        batches = shard.iter_batches(
            batch_size=train_cfg.batch_size, batch_format="numpy", drop_last=True,
            local_shuffle_buffer_size=4 * train_cfg.batch_size, local_shuffle_seed=rank_seed(train_cfg.seed, rank, epoch),
        )
        for batch in batches:
            yield torch.from_numpy(decode_images(batch["image"], image_shape)), torch.from_numpy(batch["label"].astype(np.int64))

    def epoch_batches(epoch: int) -> Iterator[Batch]:
        nonlocal in_memory
        if train_cfg.cache_shard and in_memory is None:
            parts = list(shard.iter_batches(batch_size=4096, batch_format="numpy"))
            images = np.concatenate([decode_images(b["image"], image_shape) for b in parts])
            labels = np.concatenate([b["label"] for b in parts])
            check_equal_batches(gather(len(images) // train_cfg.batch_size, ctx), train_cfg.batch_size)
            in_memory = in_memory_batches(images, labels, train_cfg.batch_size, train_cfg.seed, rank)
        yield from (in_memory or stream)(epoch)

    return epoch_batches


def parquet_batches(dataset_dir: Path, train_cfg: TrainConfig, ctx: WorkerContext) -> Callable[[int], Iterator[Batch]]:
    """Batches of this rank's rows read straight from the dataset's Parquet files into memory (`ray.loader`: parquet), no
    Ray Data pipeline to start: an equal, contiguous share of the train split per rank, reshuffled in memory every epoch."""
    per_rank = read_manifest(dataset_dir)["rows"]["train"] // ctx.world_size
    images, labels = load_split(dataset_dir, "train", np.arange(ctx.rank * per_rank, (ctx.rank + 1) * per_rank))
    return in_memory_batches(images, labels, train_cfg.batch_size, train_cfg.seed, ctx.rank)


def check_equal_batches(per_rank: list[float], batch_size: int) -> None:
    """Before the first step: every rank has as many batches per epoch, or DDP's all-reduce would wait forever for the
    rank that ran out. Ray Train splits the dataset into equal shards, so this holds unless that changes."""
    assert len(set(per_rank)) == 1, (f"the ranks' shards hold {[int(n) for n in per_rank]} batches of {batch_size}: DDP needs "
                                     "the same number on every rank (Ray Train's split should make them equal)")


def train_loop_per_worker(loop_config: dict) -> None:
    """Runs on every Ray Train worker: build the context, stream the shard, resume, train."""
    import ray  # noqa: PLC0415
    import ray.util  # noqa: PLC0415
    import ray.train  # noqa: PLC0415
    import ray.train.torch  # noqa: PLC0415

    cfg = PipelineConfig.model_validate(loop_config["config"])
    image_shape = tuple(loop_config["image_shape"])
    context = ray.train.get_context()
    ctx = WorkerContext(context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device())
    node = ray.get_runtime_context()
    print(f"[train] rank {ctx.rank} of {ctx.world_size} on node {node.get_node_id()[:12]} ({ray.util.get_node_ip_address()})", flush=True)
    # Ray's CPU reservation is scheduling bookkeeping (kept low so Ray Data can run beside the workers);
    # the threads are what computes. By default the workers on a node share its cores.
    torch.set_num_threads(cfg.ray.threads_per_worker or max(1, (os.cpu_count() or 1) // context.get_local_world_size()))

    staging = Path(tempfile.mkdtemp(prefix="gan-samples-"))
    (staging / SAMPLES).mkdir()
    resume, resumed_epoch = None, 0
    checkpoint = ray.train.get_checkpoint()  # the latest one, after a worker restart or a re-run of the same name
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = ckpt.load(Path(directory))
            if (Path(directory) / SAMPLES).is_dir():
                shutil.copytree(Path(directory) / SAMPLES, staging / SAMPLES, dirs_exist_ok=True)
        resumed_epoch = int(resume["epoch"])
    sink = RayTrainSink(ctx, staging, loop_config["failure_hooks"], resumed_epoch, loop_config["lineage"])
    # A warm start's parent: its weights unless the run resumes from its own checkpoint (which carries on from them), its
    # EMA horizon always.
    init = ckpt.load_bytes(loop_config["init"], "the warm start's parent state") if loop_config["init"] else None

    # Batches of the size this worker's device trains on (train.gpu_batch_size on a GPU, when set: gan.config.device_batch).
    shard_cfg = cfg.train.model_copy(update={"batch_size": device_batch(cfg.train, ctx.device.type == "cuda")})
    if loop_config["dataset_dir"]:
        batches = parquet_batches(Path(loop_config["dataset_dir"]), shard_cfg, ctx)
    else:
        batches = shard_batches(ray.train.get_dataset_shard("train"), shard_cfg, image_shape, ctx)

    if cfg.data.mirror:
        batches = mirrored(batches, cfg.train.seed, ctx.rank)

    def epoch_batches(epoch: int) -> Iterator[Batch]:
        for index, batch in enumerate(batches(epoch)):
            sink.first_batch_unix = sink.first_batch_unix or time.time()
            sink.batch_start(epoch, index)
            yield batch

    quick_fid = QuickFID.load(loop_config["quick_fid"], "the driver's quick-FID") if loop_config.get("quick_fid") and ctx.is_main else None
    try:
        train_loop(
            cfg.recipe, image_shape, loop_config["num_classes"], epoch_batches, sink, ctx, resume, cfg.model_dump(mode="json"),
            steps_per_epoch=loop_config["steps_per_epoch"], quick_fid=quick_fid, init=init, nan_at_step=loop_config["nan_at_step"],
            num_images=loop_config["num_images"],
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
