"""A full disk while ingesting and while checkpointing: the write fails naming its file (or the dataset), leaves nothing
half-written, the CLI says so in one line (exit 2), and the same write succeeds once space is freed.

The disk is a real 4 MiB tmpfs when this process may mount one (root); otherwise a quota on the checkpoint writer's
open() and an ENOSPC from the dataset's shard writer, and the tests of the other things pyarrow writes (Ray Train's
upload, the local copy) are skipped.
"""

import contextlib
import errno
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gan import checkpoint
from tests.test_training_loop import recipe, run


class TmpfsDisk:
    """A real small file system: every writer (torch, pyarrow, Python) meets the full disk."""

    real = True

    def __init__(self, folder: Path):
        self.folder, self.filler = folder, folder / "filler"

    def fill(self, leave: int) -> None:
        """Take all the space but `leave` bytes."""
        stats = os.statvfs(self.folder)
        self.filler.write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))

    def free(self) -> None:
        self.filler.unlink()


class QuotaDisk:
    """A full disk as gan.checkpoint's writer sees it: its open() hands out files that refuse bytes past the quota."""

    real = False

    def __init__(self, folder: Path):
        self.folder, self.left = folder, 1 << 40

    def fill(self, leave: int) -> None:
        self.left = leave

    def free(self) -> None:
        self.left = 1 << 40

    def open(self, path: Path, mode: str = "r") -> io.FileIO:
        disk = self

        class Quota(io.FileIO):
            def write(self, b: bytes) -> int:
                size = memoryview(b).nbytes
                if size > disk.left:
                    disk.left = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.left -= size
                return super().write(b)

        return Quota(path, mode)


def open_files() -> list[str]:
    """What this process's file descriptors point at."""
    links = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed since the listing
            links.append(os.readlink(fd))
    return links


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TmpfsDisk | QuotaDisk]:
    folder = tmp_path / "disk"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)]
    if os.geteuid() == 0 and subprocess.run(mount, capture_output=True).returncode == 0:
        try:
            yield TmpfsDisk(folder)
        finally:
            subprocess.run(["umount", str(folder)], check=True)
    else:
        disk = QuotaDisk(folder)
        monkeypatch.setattr(checkpoint, "open", disk.open, raising=False)  # found before the builtin
        yield disk


@pytest.fixture(scope="module")
def state() -> dict:
    """A tiny MLP GAN's checkpoint state after one epoch on 8x8 digits."""
    return run(recipe(model=dict(arch="mlp"), train=dict(epochs=1, checkpoint_every_epochs=1))).states[-1]


def saved_size(state: dict, folder: Path) -> int:
    """The checkpoint's size, as saved into `folder` (created) on a disk with room."""
    folder.mkdir(parents=True)
    return checkpoint.save(state, folder).stat().st_size


def test_a_checkpoint_on_a_full_disk_fails_naming_its_file_and_saves_once_space_is_freed(
    small_disk: TmpfsDisk | QuotaDisk, state: dict, tmp_path: Path,
) -> None:
    from pipelines.cli.app import _failure  # noqa: PLC0415

    size = saved_size(state, tmp_path / "elsewhere")
    folder = small_disk.folder / "checkpoint_000001"
    folder.mkdir()
    small_disk.fill(leave=size // 2)

    with pytest.raises(OSError) as failed:
        checkpoint.save(state, folder)
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(folder / "state.pt")
    assert list(folder.iterdir()) == []  # neither state.pt nor a partial temporary
    message, code = _failure(failed.value)
    assert code == 2
    assert message.startswith(f"error: no space left on device writing {folder / 'state.pt'}: free some space there (df -h {folder}")
    assert "run the same command again" in message and "\n" not in message

    small_disk.free()
    checkpoint.save(state, folder)
    loaded = checkpoint.load(folder)
    assert loaded["step"] == state["step"]
    assert all(torch.equal(loaded["G_ema"][k], v) for k, v in state["G_ema"].items())


def test_a_checkpoint_upload_that_fills_the_disk_leaves_no_partial_folder(
    small_disk: TmpfsDisk | QuotaDisk, state: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray Train's upload into the run's storage (pyarrow's copy): the folder it had begun goes, the error names it."""
    if not small_disk.real:
        pytest.skip("pyarrow writes past a simulated quota: needs a real small file system (mount -t tmpfs, as root)")
    import ray.train  # noqa: PLC0415
    from ray.train.v2._internal.execution.storage import StorageContext  # noqa: PLC0415

    from pipelines.cluster.worker import upload_whole  # noqa: PLC0415

    storage = StorageContext(str(small_disk.folder), "train-x")
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace(get_storage=lambda: storage))
    source = tmp_path / "local"
    small_disk.fill(leave=saved_size(state, source) // 2)

    with pytest.raises(OSError) as failed:
        upload_whole(ray.train.Checkpoint.from_directory(str(source)), "checkpoint_000001")
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == f"{small_disk.folder}/train-x/checkpoint_000001"
    assert not (small_disk.folder / "train-x" / "checkpoint_000001").exists()

    small_disk.free()
    uploaded = upload_whole(ray.train.Checkpoint.from_directory(str(source)), "checkpoint_000001")
    assert checkpoint.load(Path(uploaded.path))["step"] == state["step"]


def test_a_local_copy_that_fills_the_disk_leaves_no_temporaries(
    small_disk: TmpfsDisk | QuotaDisk, state: dict, tmp_path: Path,
) -> None:
    """`ray.storage_path` a URI: the final checkpoint's copy into the working folder, on a full disk."""
    if not small_disk.real:
        pytest.skip("pyarrow writes past a simulated quota: needs a real small file system (mount -t tmpfs, as root)")
    from ray.train import Checkpoint  # noqa: PLC0415

    from pipelines.cluster.ray import RAY_RUN_RECORD  # noqa: PLC0415
    from pipelines.workspace import Workspace
    from pipelines.cluster.fit import local_copy  # noqa: PLC0415

    remote = tmp_path / "bucket" / "train-x" / "checkpoint_000001"
    size = saved_size(state, remote)
    (remote.parent / RAY_RUN_RECORD).write_text("{}")
    workspace = Workspace.of(str(small_disk.folder / "gan-work"))
    small_disk.fill(leave=size // 2)

    with pytest.raises(OSError) as failed:
        local_copy(Checkpoint(f"file://{remote}"), workspace, "train-x")
    out = workspace.checkpoints / "train-x" / "checkpoint_000001"
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(out)
    assert not out.exists() and not list(out.parent.glob(".tmp-*"))

    small_disk.free()
    assert checkpoint.load(local_copy(Checkpoint(f"file://{remote}"), workspace, "train-x"))["step"] == state["step"]


def test_a_full_disk_inside_ray_trains_error_is_found_named_and_not_retried() -> None:
    from ray.train import WorkerGroupError  # noqa: PLC0415

    from pipelines.errors import retry_unless_user_error  # noqa: PLC0415
    from pipelines.cluster.fit import storage_failure  # noqa: PLC0415

    full = OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")  # pyarrow's
    wrapped = RuntimeError("user code failed")
    wrapped.__cause__ = full
    found = storage_failure(WorkerGroupError("rank 0 failed", {0: wrapped}), "/runs/train-x")
    assert (found.errno, found.strerror, found.filename) == (errno.ENOSPC, "No space left on device", "/runs/train-x")
    assert storage_failure(WorkerGroupError("rank 0 failed", {0: ConnectionError("reset")}), "/runs/train-x") is None
    assert not retry_unless_user_error(None, None, SimpleNamespace(data=found))
    assert retry_unless_user_error(None, None, SimpleNamespace(data=ConnectionError("reset")))


def test_the_cli_names_a_read_only_or_forbidden_place_in_one_line() -> None:
    from pipelines.cli.app import _failure  # noqa: PLC0415

    for code, reason in ((errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")):
        message, exit_code = _failure(OSError(code, os.strerror(code), "/data/gan-work/mlflow.db"))
        assert exit_code == 2 and message.startswith(f"error: /data/gan-work/mlflow.db: {reason}: give this user access to it")


def test_an_ingest_on_a_full_disk_fails_naming_the_dataset_and_writes_it_whole_once_space_is_freed(
    small_disk: TmpfsDisk | QuotaDisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ingest stage's own function, its working folder on the small disk: 4,000 28x28 images (3 MiB) in shards of
    0.5 MiB, with room for about half of them."""
    import numpy as np  # noqa: PLC0415

    from gan.data import writer  # noqa: PLC0415
    from gan.data.manifest import read_manifest  # noqa: PLC0415
    from pipelines.cli.app import _failure  # noqa: PLC0415
    from pipelines.config import load_config  # noqa: PLC0415
    from pipelines.stages.ingest import ingest  # noqa: PLC0415
    from tests.test_pipeline import SMOKE  # noqa: PLC0415

    rng = np.random.default_rng(0)
    source = tmp_path / "images.npz"
    np.savez(source, images=rng.integers(0, 256, (4000, 28, 28), dtype=np.uint8), labels=rng.integers(0, 3, 4000))
    settings = [f"data.source={source}", "data.shard_mb=0.5", "data.ingest_workers=1"]
    whole = Path(ingest(load_config(SMOKE, [*settings, f"runtime.workdir={tmp_path / 'elsewhere'}"])))
    size = sum(f.stat().st_size for f in whole.rglob("*") if f.is_file())
    cfg = load_config(SMOKE, [*settings, f"runtime.workdir={small_disk.folder / 'gan-work'}"])
    if small_disk.real:
        small_disk.fill(leave=size // 2)
    else:  # the disk fills as the fourth shard's first row group is written, its file open
        opened = []

        class FullDiskWriter(writer.pq.ParquetWriter):
            def __init__(self, *args, **options) -> None:  # noqa: ANN002, ANN003
                super().__init__(*args, **options)
                opened.append(self)

            def write_table(self, table, row_group_size=None) -> None:  # noqa: ANN001
                if len(opened) >= 4 and small_disk.left == 0:
                    raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
                super().write_table(table, row_group_size=row_group_size)

        monkeypatch.setattr(writer.pq, "ParquetWriter", FullDiskWriter)
        small_disk.fill(leave=0)

    with pytest.raises(OSError) as failed:
        ingest(cfg)
    datasets = small_disk.folder / "gan-work" / "datasets"
    out = datasets / whole.name
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(out)
    assert not out.exists() and not list(out.parent.glob(".tmp-*"))  # no dataset, not even half of one
    assert not list((small_disk.folder / "gan-work" / "scratch").glob("*"))
    # Nothing left open on that disk: a descriptor of the half-written shard would keep its space taken.
    assert not [link for link in open_files() if link.startswith(str(small_disk.folder))]
    message, code = _failure(failed.value)
    assert code == 2 and message.startswith(f"error: no space left on device writing {out}: free some space there (df -h {out.parent}")

    small_disk.free()
    assert ingest(cfg) == str(out)
    assert read_manifest(out)["rows"] == read_manifest(whole)["rows"]
    assert sum(pq_rows(out / split) for split in ("train", "heldout")) == 4000


def pq_rows(folder: Path) -> int:
    import pyarrow.parquet as pq  # noqa: PLC0415

    return pq.read_table(folder).num_rows
