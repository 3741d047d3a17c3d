"""The working folder: every path a run writes to, one run at a time in it (its lock), places that must take files
checked before any service starts, the datasets it holds, and the environment defaults of the embedded services.

Nothing here runs at import time: the CLI calls `configure_environment` before Prefect is imported.
"""

import fcntl
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.cluster.ray import RAY_WORKER_ENV, trains_as_job
from pipelines.config import is_uri
from pipelines.errors import UsageError

if TYPE_CHECKING:
    from pipelines.config import PipelineConfig


@dataclass(frozen=True)
class Workspace:
    """Every path a run writes to, under one working folder, so two projects never mix."""

    root: Path

    @classmethod
    def of(cls, workdir: str) -> "Workspace":
        return cls(Path(workdir).expanduser().resolve())

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def ray_results(self) -> Path:
        return self.root / "ray_results"

    @property
    def checkpoints(self) -> Path:
        """Local copies of final checkpoints that Ray Train keeps elsewhere (`ray.storage_path` a URI)."""
        return self.root / "checkpoints"

    @property
    def evaluations(self) -> Path:
        return self.root / "evaluations"

    @property
    def classifiers(self) -> Path:
        return self.root / "classifiers"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def prefect_results(self) -> Path:
        return self.root / "prefect-results"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


_LOCKS_HELD: dict[Path, int] = {}  # the working-folder locks this process holds -> their open files


def acquire_workspace_lock(workspace: Workspace) -> bool:
    """Take the working folder's lock: one run at a time per working folder, the next one waits (and says so).
    False if this process holds it already (the CLI's command takes it, then the flow it runs).

    Two runs at once in one folder would start two local Ray clusters on the same cores, write one Prefect and one
    MLflow SQLite database together, and promote against each other: each reads the champion before the other has
    moved it, and `champion` ends on whichever wrote last, whatever the gate says. An exclusive `flock` on
    `<workdir>/.lock` serialises them; the kernel releases it when its process ends, even by SIGKILL, so a killed
    run never leaves a stale lock.
    """
    path = workspace.lock
    if path in _LOCKS_HELD:
        return False
    workspace.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid unknown"
        print(f"waiting for another run in this working folder ({holder}) to finish: {workspace.root}", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
    _LOCKS_HELD[path] = fd
    return True


def release_workspace_locks() -> None:
    """Let the next run in: close every working-folder lock this process holds."""
    while _LOCKS_HELD:
        os.close(_LOCKS_HELD.popitem()[1])


@contextmanager
def workspace_lock(workspace: Workspace) -> Iterator[None]:
    """The working folder's lock around a block (`acquire_workspace_lock`); released after unless held before."""
    taken = acquire_workspace_lock(workspace)
    try:
        yield
    finally:
        if taken:
            os.close(_LOCKS_HELD.pop(workspace.lock))


def ray_storage(storage_path: str, workspace: Workspace) -> str:
    """Ray Train's storage: a `pyarrow.fs` URI as given, else an absolute local path (Ray Train takes no relative ones);
    '' is the workspace's ray_results."""
    if is_uri(storage_path):
        return storage_path
    return str(Path(storage_path).expanduser().resolve()) if storage_path else str(workspace.ray_results)


def check_writable(folder: Path, setting: str, create: bool = True) -> None:
    """A setting that names a place where nothing can be written fails here, in one line, before any service starts, and
    not at the stage that first writes there. With `create`, the nearest folder above that exists is probed instead
    (the run creates the rest)."""
    probed = next(p for p in (folder, *folder.parents) if p.exists()) if create else folder
    why = _unwritable(probed)
    if why is not None:
        raise UsageError(f"{setting}: cannot write in {folder} ({why}); expected a writable folder")


def _unwritable(folder: Path) -> str | None:
    """Why no file can be written in `folder`, or None: found by writing a nameless file, which leaves nothing behind."""
    if not folder.exists():
        return "no such folder"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        return os.strerror(err.errno).lower() if err.errno else str(err)  # read-only file system, permission denied, ...
    return None


def writable_workspace(workdir: str) -> Workspace:
    """`runtime.workdir` as a Workspace, created if need be, once a file could be written there."""
    workspace = Workspace.of(workdir)
    check_writable(workspace.root, f"runtime.workdir = {workdir!r}")
    return workspace


def check_stores(cfg: "PipelineConfig") -> None:
    """The other local places a run writes to must take files too: Ray Train's storage when the driver runs here (a Ray
    Job's is on the cluster) and a local MLflow store. Remote stores (s3://, an MLflow server) are not probed."""
    storage = cfg.ray.storage_path  # '' is the working folder's ray_results
    if storage and not trains_as_job(cfg) and (not is_uri(storage) or storage.startswith("file://")):
        check_writable(Path(storage.removeprefix("file://")).expanduser().resolve(), f"ray.storage_path = {storage!r}")
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri and uri.startswith("sqlite:///"):  # SQLite creates the file, not its folder
        database = Path(uri.removeprefix("sqlite:///").partition("?")[0])
        check_writable(database.expanduser().resolve().parent, f"MLFLOW_TRACKING_URI = {uri!r}", create=False)
    elif uri and (not is_uri(uri) or uri.startswith("file://")):  # a file store: MLflow creates the folder
        check_writable(Path(uri.removeprefix("file://")).expanduser().resolve(), f"MLFLOW_TRACKING_URI = {uri!r}")


def configure_environment(workspace: Workspace) -> None:
    """Defaults for the embedded services; anything the user already set wins. Call before importing Prefect."""
    defaults = {
        # Prefect: cached task results under the workspace; a patient ephemeral server start on small machines.
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(workspace.prefect_results),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LOG_PRINTS": "true",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        # Ray: no token file in the home folder for a local cluster, no usage reports. Workers at normal priority (Ray's default
        # is nice 15): a training worker that yields its cores to every control-plane process of a small
        # machine trains a fifth slower (BENCHMARKS.md).
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_worker_niceness": "0",
        **RAY_WORKER_ENV,
        # MLflow: no Git probing, no telemetry.
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def tracking_uri(workspace: Workspace) -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite store in the workspace."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workspace.mlflow_db}"


def datasets(workspace: Workspace) -> Iterator[tuple[Path, dict]]:
    """The complete datasets of the working folder, with their manifests (folders are named by source bytes and split
    settings; manifests tell the content)."""
    from gan.data.errors import DataError  # noqa: PLC0415 - pyarrow: only when asked
    from gan.data.manifest import read_manifest  # noqa: PLC0415

    for folder in sorted(workspace.datasets.glob("[!.]*")):  # not the temporaries of a writer
        try:
            yield folder, read_manifest(folder)
        except DataError:  # incomplete, or written in an older format
            continue


def find_dataset(cfg: "PipelineConfig", data_fingerprint: str) -> Path | None:
    """The workspace's dataset whose manifest has this content fingerprint (a registered version's `dataset_fingerprint`),
    if any. Folders are named by source bytes and split settings, so the manifests are what tells the content."""
    for folder, manifest in datasets(Workspace.of(cfg.runtime.workdir)):
        if manifest["fingerprint"] == data_fingerprint:
            return folder
    return None
