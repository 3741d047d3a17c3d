"""Where things live and which services to use: embedded local defaults, or the cluster named by the environment.

Nothing here runs at import time: the CLI calls `configure_environment` before Prefect is imported.
"""

import fcntl
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gan
from pipelines.codebase import code_version
from pipelines.config import UsageError, is_uri

if TYPE_CHECKING:
    from pipelines.config import PipelineConfig

GAN_DIR = Path(gan.__file__).parent
PROJECT_ROOT = GAN_DIR.parent  # holds gan/ and pipelines/: a git checkout when run from source
DISTRIBUTION = "gan-pipeline"  # [project] name in pyproject.toml
GIT_TIMEOUT_S = 5
RAY_RUN_RECORD = "checkpoint_manager_snapshot.json"  # Ray Train keeps it in the run's folder, to resume the run from


# For Ray's processes. The controller polls workers every 0.25 s instead of 2 s (each ray.train.report
# waits for that poll); workers print plainly instead of through Ray Train's logger, which would
# show every line twice.
RAY_WORKER_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
}


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
        # Ray: no token file in the home folder for a local cluster. Workers at normal priority (Ray's default
        # is nice 15): a training worker that yields its cores to every control-plane process of a small
        # machine trains a fifth slower (BENCHMARKS.md).
        "RAY_AUTH_MODE": "disabled",
        "RAY_worker_niceness": "0",
        **RAY_WORKER_ENV,
        # MLflow: no Git probing, no telemetry.
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def code_tags() -> dict[str, str]:
    """What code made a result, as tags: `code_version`, and where known `git_sha` and the installed `package_version`."""
    tags = {"code_version": code_version(), "git_sha": git_sha(), "package_version": package_version()}
    return {key: value for key, value in tags.items() if value is not None}


def package_version() -> str | None:
    """The installed distribution's version (None when the code runs without being installed)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_sha(root: Path = PROJECT_ROOT) -> str | None:
    """HEAD of the git checkout at `root`, with `-dirty` when tracked files have changes; None when `root` is no
    checkout's top folder (an installed copy inside some other repository does not count) or git is not there."""
    if not _is_checkout(root):
        return None
    try:
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no") != ""
        return _git(root, "rev-parse", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):  # no commit yet, or git hung
        return None


def commit_exists(sha: str, root: Path = PROJECT_ROOT) -> bool | None:
    """Whether the checkout at `root` holds this commit; None when there is no checkout (or no git) to ask."""
    if not _is_checkout(root):
        return None
    try:
        _git(root, "cat-file", "-e", f"{sha}^{{commit}}")
        return True
    except subprocess.CalledProcessError:
        return False
    except (OSError, subprocess.SubprocessError):
        return None


def _is_checkout(root: Path) -> bool:
    try:
        return Path(_git(root, "rev-parse", "--show-toplevel")).resolve() == root.resolve()
    except (OSError, subprocess.SubprocessError):  # no git, or not inside a repository
        return False


def _git(root: Path, *args: str) -> str:
    # --no-optional-locks: `status` must not take the index lock that a git command of the user may be holding.
    done = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=GIT_TIMEOUT_S, check=True)
    return done.stdout.strip()


def dashboard_address() -> str | None:
    """RAY_ADDRESS when it names a cluster's dashboard (http(s)://host:8265): Ray Jobs go there; drivers cannot join it."""
    address = os.environ.get("RAY_ADDRESS", "")
    return address if address.startswith(("http://", "https://")) else None


def cluster_runtime_env(env_vars: dict[str, str] | None = None) -> dict:
    """What a remote cluster's processes need: this library shipped to them, and the Ray Train settings passed on."""
    env = {key: os.environ.get(key, value) for key, value in RAY_WORKER_ENV.items()}
    return {"py_modules": [str(GAN_DIR), str(Path(__file__).parent)], "env_vars": {**env, **(env_vars or {})}}


def refuse_dashboard() -> None:
    """A driver in this process joins a cluster through its GCS or ray:// address; a dashboard address takes jobs only."""
    if dashboard_address():
        raise UsageError(
            f"RAY_ADDRESS={dashboard_address()} is a dashboard address, which takes Ray Jobs only (ray.driver: job or auto); "
            "to run the driver in this process, set RAY_ADDRESS to the cluster's GCS address (host:6379) or ray://host:10001"
        )


def trains_as_job(cfg: "PipelineConfig") -> bool:
    """`ray.driver`: job, or auto with RAY_ADDRESS naming a dashboard (where only jobs go)."""
    return cfg.ray.driver == "job" or (cfg.ray.driver == "auto" and dashboard_address() is not None)


def check_driver(cfg: "PipelineConfig") -> None:
    """`ray.driver` against RAY_ADDRESS, before any service starts: a job needs a cluster to go to, and a driver in this
    process cannot join one through its dashboard address."""
    if cfg.ray.driver == "job" and not os.environ.get("RAY_ADDRESS"):
        raise UsageError("ray.driver = 'job' needs RAY_ADDRESS: the cluster's dashboard (http://head:8265), GCS or ray:// address")
    if not trains_as_job(cfg):
        refuse_dashboard()


def ensure_ray() -> None:
    """Connect to RAY_ADDRESS if set, else start (once per process) a local Ray on this machine's CPUs."""
    import ray  # noqa: PLC0415 - heavy import, only for stages that use Ray

    if ray.is_initialized():
        return
    refuse_dashboard()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=cluster_runtime_env())
        print(f"[ray] connected to the cluster at {ray.get_runtime_context().gcs_address}")
    else:
        # The dashboard also serves the state API, which Ray Train's controller polls: without it, every
        # poll logs a warning.
        context = ray.init(num_cpus=os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1", logging_level="WARNING")
        print(f"[ray] local cluster started; dashboard at http://{context.dashboard_url}")
    from pipelines import console  # noqa: PLC0415

    console.attach_ray()


def tracking_uri(workspace: Workspace) -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite store in the workspace."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workspace.mlflow_db}"
