"""Bad input on the config, command-line, workspace and services side, each through the real CLI in its own process:
one line on stderr that names the key, file or value and what was expected, exit 2, no traceback, and nothing left
behind: no new file or folder but the command's log, no `.tmp-*` and the registry untouched.

Every row fails before any service starts. A row is (id, args, setup, expected):
- `args` follow `gan-pipeline`; `{tmp}` is the case's own folder, where the CLI runs and which holds `a-file` (a regular
  file) and `gan-work/mlflow.db` (a registry with one champion), and `{smoke}` is conf/smoke.yaml;
- `setup` is None, an environment (dict, `{tmp}` filled in), or a generator function of the case's folder that makes
  what the row needs, yields the environment it adds and cleans up after;
- `expected` is a substring of stderr, `{tmp}` filled in (so a brace of the message is written twice).
Rows for other inputs (data sources) go at the end of BAD_INPUTS.
"""

import contextlib
import functools
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gan import checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "conf" / "smoke.yaml")
CLI = str(Path(sys.executable).with_name("gan-pipeline"))
TIMEOUT_S = 60  # every row fails in seconds, before any service starts
SERVICE_ENV = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "PREFECT_API_URL", "GAN_PIPELINE_FAIL_AT")  # the case's rows set their own


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """A folder that refuses new files: by its mode for a normal user; for root, whom modes do not stop, a read-only tmpfs
    mounted on it (skipped where root may not mount)."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"root, and no read-only mount allowed here ({mounted.stderr.decode().strip()}): no folder refuses root's files")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def read_only_folder(tmp: Path) -> Iterator[dict]:
    with read_only(tmp / "read-only"):
        yield {}


def read_only_mlflow_store(tmp: Path) -> Iterator[dict]:
    with read_only(tmp / "read-only"):
        yield {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/read-only/mlflow.db"}


def config_file(content: bytes) -> Callable[[Path], Iterator[dict]]:
    """A setup that writes {tmp}/config.yaml."""
    def setup(tmp: Path) -> Iterator[dict]:
        (tmp / "config.yaml").write_bytes(content)
        yield {}
    return setup


def run_with(*overrides: str) -> list[str]:
    return ["run", "-c", "{smoke}", *(arg for item in overrides for arg in ("--set", item))]


# The networks of tests.test_training_loop's tiny MLP GAN, over conf/smoke.yaml's (an MLP GAN as well).
TINY_NETWORKS = ("model.z_dim=8", "model.g_width=8", "model.d_width=8", "model.g_hidden=[32]", "model.d_hidden=[32]")


@functools.cache
def tiny_state() -> dict:
    from tests.test_training_loop import recipe, run  # noqa: PLC0415

    return run(recipe(model=dict(arch="mlp"), train=dict(epochs=1))).states[-1]


def tiny_parent(tmp: Path) -> Iterator[dict]:
    """{tmp}/parent: a checkpoint of that tiny MLP GAN, trained on 8x8 digits."""
    (tmp / "parent").mkdir()
    checkpoint.save(tiny_state(), tmp / "parent")
    yield {}


def foreign_parent(kind: str) -> Callable[[Path], Iterator[dict]]:
    """{tmp}/parent holding a state.pt this project did not write: a pickle whose payload would make the folder {tmp}/ran
    (which the row's check for new files would find), or a checkpoint cut in half."""
    def setup(tmp: Path) -> Iterator[dict]:
        from tests.test_saved_files import GOOD, payload  # noqa: PLC0415

        (tmp / "parent").mkdir()
        (tmp / "parent" / checkpoint.STATE_FILE).write_bytes(payload(tmp / "ran") if kind == "pickle" else GOOD[: len(GOOD) // 2])
        yield {}
    return setup


BAD_INPUTS: list[tuple[str, list[str], Callable | dict | None, str]] = [
    # the command line
    ("preset-unknown", ["run", "--preset", "nope", "-c", "{smoke}"], None,
     "preset 'nope' does not exist; known presets: article-mlp, cgan, dcgan"),
    ("set-without-equals", run_with("train.epochs"), None, "--set 'train.epochs': expected section.key=value, e.g. train.epochs=5"),
    ("set-unknown-section", run_with("bogus.x=1"), None,
     "config error: bogus = {{'x': 1}} (--set): unknown key; allowed here: data, eval, model, optim, ray, reg, registry, runtime, train"),
    ("set-unknown-key", run_with("train.epochz=3"), None, "config error: train.epochz = 3 (--set): unknown key; allowed here: batch_size,"),
    ("set-wrong-type", run_with("train.epochs=abc"), None, "config error: train.epochs = 'abc' (--set): Input should be a valid integer"),
    ("set-out-of-range", run_with("train.epochs=-1"), None,
     "config error: train.epochs = -1 (--set): Input should be greater than or equal to 1"),
    ("set-not-a-choice", run_with("train.loss=nope"), None,
     "config error: train.loss = 'nope' (--set): Input should be 'minimax', 'ns', 'hinge', 'lsgan', 'wgan' or 'wgan-gp'"),
    ("set-bad-model-name", run_with("registry.model_name=a/b"), None,
     "config error: registry.model_name = 'a/b' (--set): String should match pattern"),
    ("stage-missing-dataset", ["train", "-c", "{smoke}", "--dataset", "{tmp}/no-dataset"], None,
     "error: --dataset {tmp}/no-dataset: no such file or folder"),
    # the test hooks (pipelines/faults.py), read before any work
    ("fail-hook-unknown-form", run_with(), {"GAN_PIPELINE_FAIL_AT": "ingest:once,trian"},
     "config error: GAN_PIPELINE_FAIL_AT='ingest:once,trian': unknown form 'trian'; expected STAGE, STAGE:once, POINT, POINT:once, kill:STAGE, train:N"),
    ("fail-hook-epoch-zero", ["ingest", "-c", "{smoke}"], {"GAN_PIPELINE_FAIL_AT": "train:0"},
     "config error: GAN_PIPELINE_FAIL_AT='train:0': unknown form 'train:0'"),
    ("nan-hook-not-a-step", run_with(), {"GAN_INJECT_NAN_AT_STEP": "4²"},
     "config error: GAN_INJECT_NAN_AT_STEP='4²': expected a step number (1 or more), or unset"),
    # the config file
    ("config-missing", ["run", "-c", "{tmp}/absent.yaml"], None, "config file {tmp}/absent.yaml does not exist"),
    ("config-is-a-folder", ["run", "-c", "{tmp}"], None, "config file {tmp} is a folder; expected a YAML file"),
    ("config-not-text", ["run", "-c", "{tmp}/config.yaml"], config_file(b"\xff\xfe\x00train"),
     "config file {tmp}/config.yaml is not UTF-8 text (byte 0); expected a YAML file"),
    ("config-malformed-yaml", ["run", "-c", "{tmp}/config.yaml"], config_file(b"train:\n  epochs: [1\n"),
     "config file {tmp}/config.yaml is not valid YAML: line 3, column 1: expected ',' or ']', but got '<stream end>'"),
    ("config-a-list", ["run", "-c", "{tmp}/config.yaml"], config_file(b"- train\n- ray\n"),
     "config file {tmp}/config.yaml: expected a mapping of sections, got list"),
    ("config-unknown-section", ["run", "-c", "{smoke}", "-c", "{tmp}/config.yaml"], config_file(b"trian:\n  epochs: 1\n"),
     "config error: trian = {{'epochs': 1}} ({tmp}/config.yaml): unknown key; allowed here: data, eval,"),
    ("config-section-not-a-mapping", ["run", "-c", "{tmp}/config.yaml"], config_file(b"train: 5\n"),
     "config error: train = 5 ({tmp}/config.yaml): Input should be a valid dictionary"),
    # settings checked against the data and this machine
    ("batch-larger-than-the-data", run_with("train.batch_size=4096"), None,
     "error: train.batch_size = 4096: each of 2 workers holds only 2000 training images; lower train.batch_size or ray.num_workers"),
    ("workers-need-more-cpus", run_with("ray.cpus_per_worker=256"), None,
     "config error: ray.num_workers x ray.cpus_per_worker = 2 x 256.0 reserves 512 of this machine's"),
    # the working folder and the stores
    ("workdir-read-only", run_with("runtime.workdir={tmp}/read-only"), read_only_folder,
     "error: runtime.workdir = '{tmp}/read-only': cannot write in {tmp}/read-only ("),
    ("workdir-under-a-file", run_with("runtime.workdir={tmp}/a-file/gan-work"), None,
     "error: runtime.workdir = '{tmp}/a-file/gan-work': cannot write in {tmp}/a-file/gan-work ({tmp}/a-file is a file, not a folder)"),
    ("mlflow-store-read-only", run_with(), read_only_mlflow_store,
     "error: MLFLOW_TRACKING_URI = 'sqlite:///{tmp}/read-only/mlflow.db': cannot write in {tmp}/read-only ("),
    ("mlflow-store-under-a-file", run_with(), {"MLFLOW_TRACKING_URI": "sqlite:///{tmp}/a-file/mlflow.db"},
     "error: MLFLOW_TRACKING_URI = 'sqlite:///{tmp}/a-file/mlflow.db': cannot write in {tmp}/a-file "
     "({tmp}/a-file is a file, not a folder)"),
    ("storage-unknown-scheme", run_with("ray.storage_path=ftp://host/runs"), None,
     "config error: ray.storage_path = 'ftp://host/runs' (--set): Value error, unknown storage URI scheme 'ftp'; allowed: file, s3,"),
    ("storage-relative-file-uri", run_with("ray.storage_path=file://runs"), None,
     "config error: ray.storage_path = 'file://runs' (--set): Value error, a file:// URI needs an absolute path"),
    ("storage-under-a-file", run_with("ray.storage_path={tmp}/a-file/runs"), None,
     "error: ray.storage_path = '{tmp}/a-file/runs': cannot write in {tmp}/a-file/runs ({tmp}/a-file is a file, not a folder)"),
    # the Ray cluster named by the environment
    ("driver-here-with-a-dashboard-address", run_with("ray.driver=process"), {"RAY_ADDRESS": "http://127.0.0.1:8265"},
     "error: RAY_ADDRESS=http://127.0.0.1:8265 is a dashboard address, which takes Ray Jobs only"),
    ("driver-job-without-a-cluster", run_with("ray.driver=job"), None, "error: ray.driver = 'job' needs RAY_ADDRESS"),
    # a warm start's parent (train.init_from), found in the registry or on disk and checked against the run
    ("warm-start-malformed", run_with("train.init_from=models:/x"), None,
     "config error: train.init_from = 'models:/x' (--set): Value error, expected models:/NAME@ALIAS, models:/NAME/VERSION, @ALIAS or"),
    ("warm-start-switch-alone", run_with("train.init_budget=0.5"), None,
     "config error: train.init_budget = 0.5 acts only with a warm start (train.init_from); it would do nothing here"),
    ("warm-start-missing-alias", run_with("train.init_from=@best"), None,
     "config error: train.init_from = '@best': smoke-gan: no version 'best'; registered versions: v1; aliases: champion = v1; "
     "train.init_missing 'cold' starts from scratch instead"),
    ("warm-start-missing-version", run_with("train.init_from=models:/smoke-gan/7"), None,
     "config error: train.init_from = 'models:/smoke-gan/7': smoke-gan: no version '7'"),
    ("warm-start-without-training-state", run_with("train.init_from=@champion"), None,
     "config error: train.init_from = '@champion': smoke-gan v1 keeps no training state with its run (registered before warm starts were)"),
    ("warm-start-missing-folder", run_with("train.init_from={tmp}/no-checkpoint"), None,
     "config error: train.init_from = '{tmp}/no-checkpoint': no such folder {tmp}/no-checkpoint; expected models:/NAME@ALIAS"),
    ("warm-start-other-networks", run_with("train.init_from={tmp}/parent"), tiny_parent,
     "config error: train.init_from = '{tmp}/parent': checkpoint {tmp}/parent has other networks: model.z_dim 8 (this run: 100)"),
    ("warm-start-other-images", run_with("train.init_from={tmp}/parent", *TINY_NETWORKS), tiny_parent,
     "config error: train.init_from = '{tmp}/parent': checkpoint {tmp}/parent was trained on (1, 8, 8) images; this data is (1, 28, 28)"),
    ("warm-start-a-pickle", run_with("train.init_from={tmp}/parent"), foreign_parent("pickle"),
     "error: {tmp}/parent/state.pt: not a checkpoint this project wrote: it names Python objects beyond tensors and plain values"),
    # a checkpoint handed to a stage: read before any service starts, never unpickled
    ("evaluate-checkpoint-a-pickle", ["evaluate", "-c", "{smoke}", "--dataset", "{tmp}", "--checkpoint", "{tmp}/parent"],
     foreign_parent("pickle"), "error: {tmp}/parent/state.pt: not a checkpoint this project wrote: it names Python objects beyond "
     "tensors and plain values, which could run code; nothing was loaded"),
    ("evaluate-checkpoint-truncated", ["evaluate", "-c", "{smoke}", "--dataset", "{tmp}", "--checkpoint", "{tmp}/parent"],
     foreign_parent("truncated"), "error: {tmp}/parent/state.pt: not a checkpoint this project wrote: truncated or corrupt"),
    ("evaluate-dataset-not-ingested", ["evaluate", "-c", "{smoke}", "--dataset", "{tmp}", "--checkpoint", "{tmp}/parent"], tiny_parent,
     "error: {tmp}: not a dataset (no manifest.json); run the ingest stage first"),
    ("register-checkpoint-a-pickle", ["register", "-c", "{smoke}", "--dataset", "{tmp}", "--checkpoint", "{tmp}/parent", "--report", "{tmp}/a-file"],
     foreign_parent("pickle"), "error: {tmp}/parent/state.pt: not a checkpoint this project wrote: it names Python objects"),
]


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Importing Prefect (the data checks do) creates its home folder: one for the module, outside the cases' folders."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite registry holding smoke-gan v1 as champion, copied into every case's working folder."""
    import mlflow  # noqa: PLC0415

    db = tmp_path_factory.mktemp("registry") / "mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")  # not set_tracking_uri: it exports it
    client.create_registered_model("smoke-gan")
    client.set_registered_model_alias("smoke-gan", "champion", client.create_model_version("smoke-gan", "file:///model").version)
    return db


def registry_state(db: Path) -> tuple[str, list, list]:
    """The file's hash, its model versions and its aliases."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as read:
        versions = read.execute("SELECT name, version FROM model_versions ORDER BY name, version").fetchall()
        aliases = read.execute("SELECT name, alias, version FROM registered_model_aliases ORDER BY name, alias").fetchall()
    return hashlib.sha256(db.read_bytes()).hexdigest(), versions, aliases


def run_cli(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """`gan-pipeline ARGS` in its own process group: a row that regresses into starting services (a Prefect server, Ray)
    has them killed with it when it overruns, instead of leaving them running."""
    with subprocess.Popen([CLI, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as cli:
        try:
            out, err = cli.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(cli.pid, signal.SIGKILL)
            raise
    with contextlib.suppress(ProcessLookupError):  # what it started and left behind
        os.killpg(cli.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cli.args, cli.returncode, out, err)


def everything_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize(("args", "setup", "expected"), [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_fails_in_one_line_and_leaves_nothing(
    args: list[str], setup: Callable | dict | None, expected: str, registry: Path, prefect_home: Path, tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "gan-work").mkdir()
    shutil.copy(registry, tmp_path / "gan-work" / "mlflow.db")
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ENV} | {"PREFECT_HOME": str(prefect_home)}
    with contextlib.ExitStack() as stack:
        if callable(setup):
            env |= stack.enter_context(contextlib.contextmanager(setup)(tmp_path))
        elif setup:
            env |= {k: v.format(tmp=tmp_path) for k, v in setup.items()}
        before, registered = everything_under(tmp_path), registry_state(tmp_path / "gan-work" / "mlflow.db")
        done = run_cli([a.format(tmp=tmp_path, smoke=SMOKE) for a in args], tmp_path, env)
        created = everything_under(tmp_path) - before

    assert done.returncode == 2, done.stderr[-2000:]
    assert expected.format(tmp=tmp_path) in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    logs, lock = tmp_path / "gan-work" / "logs", tmp_path / "gan-work" / ".lock"  # the run's log and the working folder's lock (it holds a pid)
    assert {p for p in created if p not in (logs, lock) and p.parent != logs} == set()  # no dataset, checkpoint, store or .tmp-* folder
    assert registry_state(tmp_path / "gan-work" / "mlflow.db") == registered
