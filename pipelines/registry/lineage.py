"""Lineage you can query: a registered model's versions, and one version's chain back to what made it.

The chain follows the lineage tags `register` leaves on a version: model version -> MLflow run -> Prefect flow run
-> Ray Train run -> checkpoint -> dataset -> resolved config -> code. Each link says what was recorded and checks
that it still exists (a folder on disk, a run in its store, a commit in this checkout); a missing one says why.
"""

import contextvars
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from gan.checkpoint import STATE_FILE
from gan.data.manifest import read_manifest
from pipelines.cluster.ray import RAY_RUN_RECORD
from pipelines.config import PipelineConfig
from pipelines.errors import UsageError, first_line
from pipelines.provenance import DISTRIBUTION, code_version, commit_exists
from pipelines.registry.client import RESOLVED_CONFIG, YARDSTICK_TAG, config_hash, connect, model_version, parse_model_uri, registered_model
from pipelines.registry.warm_start import Parent
from pipelines.workspace import Workspace, find_dataset


PREFECT_TIMEOUT_S = 60  # opening a client may first start Prefect's temporary server: 10-40 s on a busy small machine
MINUTE = "%Y-%m-%d %H:%M"


@dataclass(frozen=True)
class Link:
    """One link of a version's chain: what the registry recorded, and whether it is still there (else why not)."""

    what: str
    value: str
    exists: bool
    detail: str


@dataclass(frozen=True)
class VersionRow:
    """One registered version, as `gan-pipeline models NAME` lists it (scores None where the tags lack them)."""

    version: int
    aliases: tuple[str, ...]
    fid: float | None
    fid_std: float | None
    floor_fid: float | None
    memorised_share: float | None
    created: datetime
    run_id: str
    data: str | None = None  # the fingerprint of the data it was trained on
    parent: str | None = None  # what it was warm-started from (NAME/VERSION, a checkpoint folder), None for a cold start
    yardstick_fid: float | None = None  # its FID on the model's yardstick (fixed by the first version)
    yardstick_fid_std: float | None = None


def versions_table(cfg: PipelineConfig, name: str) -> list[VersionRow]:
    """Every version of a registered model, newest first, with its aliases and the scores its tags carry."""
    client = connect(cfg)
    aliases = _aliases_by_version(registered_model(client, name))  # a UsageError for an unknown name
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version), reverse=True)
    return [
        VersionRow(int(v.version), aliases.get(str(v.version), ()), _number(v.tags, "fid"), _number(v.tags, "fid_std"),
                   _number(v.tags, "floor_fid"), _number(v.tags, "memorised_share"), _when(v.creation_timestamp), v.run_id or "",
                   v.tags.get("dataset_fingerprint"), None if v.tags.get("parent_version", "none") == "none" else v.tags["parent_version"],
                   _number(v.tags, "yardstick_fid"), _number(v.tags, "yardstick_fid_std"))
        for v in versions
    ]


def yardstick_of(cfg: PipelineConfig, name: str) -> dict | None:
    """The model's yardstick, as its first version fixed it (None for a model registered before yardsticks were)."""
    fixed = registered_model(connect(cfg), name).tags.get(YARDSTICK_TAG)
    return None if fixed is None else json.loads(fixed)


def chain(cfg: PipelineConfig, name: str, version_or_alias: str, prefect_timeout: float = PREFECT_TIMEOUT_S) -> list[Link]:
    """The version's lineage, link by link, each checked to exist. Unknown model or version: a UsageError."""
    client = connect(cfg)
    version = model_version(client, name, version_or_alias)
    aliases = _aliases_by_version(registered_model(client, name)).get(str(version.version), ())
    tags = version.tags
    return [
        Link("model version", f"{name} v{version.version}", True,
             f"aliases {', '.join(aliases) or 'none'}; registered {_when(version.creation_timestamp):{MINUTE}}"),
        mlflow_run_link(client, version.run_id),
        prefect_link(tags.get("prefect_flow_run_id"), prefect_timeout),
        *training_links(tags.get("checkpoint")),
        warm_start_link(client, name, tags),
        dataset_link(cfg, tags.get("dataset_fingerprint")),
        data_change_link(cfg, tags),
        config_link(version.run_id, tags.get("config_hash")),
        code_link(tags),
    ]


def mlflow_run_link(client, run_id: str | None) -> Link:  # noqa: ANN001
    """The run the version was logged from, in the tracking store."""
    import mlflow  # noqa: PLC0415
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    if not run_id:
        return Link("MLflow run", "none", False, "missing: the version names no run")
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return Link("MLflow run", run_id, False, f"missing: not in the tracking store {mlflow.get_tracking_uri()}")
    if run.info.lifecycle_stage == "deleted":
        return Link("MLflow run", run_id, False, "missing: deleted from the tracking store (`mlflow runs restore` brings it back)")
    experiment = client.get_experiment(run.info.experiment_id).name
    status, started = run.info.status.lower(), _when(run.info.start_time)
    return Link("MLflow run", run_id, True, f"{run.info.run_name} in experiment {experiment}, {status}, started {started:{MINUTE}}")


def prefect_link(flow_run_id: str | None, timeout: float = PREFECT_TIMEOUT_S) -> Link:
    """The flow run that registered the version, looked up through the Prefect API within `timeout` seconds."""
    from prefect.exceptions import ObjectNotFound  # noqa: PLC0415

    what = "Prefect flow run"
    if flow_run_id is None:
        return _untagged(what, "prefect_flow_run_id")
    if flow_run_id == "none":
        return Link(what, "none", False, "missing: registered outside a flow run")
    try:
        run_uuid = UUID(flow_run_id)
    except ValueError:
        return Link(what, flow_run_id, False, "missing: not a flow-run id")
    try:
        flow_name, run = _within(timeout, _read_flow_run, run_uuid)
    except TimeoutError:
        return Link(what, flow_run_id, False, f"missing: {_prefect_api()} did not answer within {timeout:g} s")
    except ObjectNotFound:
        return Link(what, flow_run_id, False, f"missing: not found by {_prefect_api()}")
    except Exception as err:  # noqa: BLE001 - whatever keeps the API from answering, the chain reports it and goes on
        return Link(what, flow_run_id, False, f"missing: {_prefect_api()} is unreachable: {type(err).__name__}: {first_line(err)}")
    started = f", started {run.start_time:{MINUTE}}" if run.start_time else ""
    return Link(what, flow_run_id, True, f"{flow_name}/{run.name}, {run.state_name}{started}; {_flow_run_url(flow_run_id)}")


def training_links(checkpoint: str | None) -> list[Link]:
    """The Ray Train run and the checkpoint folder. Ray Train keeps a run's checkpoints in
    <RunConfig.storage_path>/<RunConfig.name>/checkpoint_<time> (pipelines/stages/train.py), so the checkpoint names its run."""
    if checkpoint is None:
        return [_untagged("Ray Train run", "checkpoint"), _untagged("checkpoint", "checkpoint")]
    return [ray_run_link(Path(checkpoint).parent), checkpoint_link(Path(checkpoint))]


def ray_run_link(run: Path) -> Link:
    if (run / RAY_RUN_RECORD).is_file():
        return Link("Ray Train run", run.name, True, f"in {run.parent}")
    why = f"{run} holds no Ray Train record ({RAY_RUN_RECORD})" if run.is_dir() else f"no folder {run}"
    return Link("Ray Train run", run.name, False, f"missing: {why}")


def checkpoint_link(folder: Path) -> Link:
    state = folder / STATE_FILE
    if not state.is_file():
        return Link("checkpoint", str(folder), False, f"missing: no {STATE_FILE} in it" if folder.is_dir() else "missing: no such folder")
    size, written = state.stat().st_size / 1e6, _when(state.stat().st_mtime * 1000)
    return Link("checkpoint", str(folder), True, f"{STATE_FILE} {size:.1f} MB, written {written:{MINUTE}}")


def warm_start_link(client, name: str, tags: dict[str, str]) -> Link:  # noqa: ANN001
    """The version it was warm-started from (checked in the registry) or the checkpoint folder (checked on disk)."""
    what = "warm start"
    if "warm_start" not in tags:
        return Link(what, "none", True, "not recorded: registered before warm starts were")
    parent = Parent.of_dict(json.loads(tags["warm_start"]))
    if parent is None:
        return Link(what, "none", True, "a cold start: trained from scratch")
    detail = f"named by {parent.source}, from step {parent.step}, state {parent.digest[:12]}"
    if parent.version is None:
        there = (Path(parent.folder) / STATE_FILE).is_file()
        return Link(what, parent.label(), there, detail if there else f"missing: no {STATE_FILE} there any more; {detail}")
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    model, _, number = parent.version.rpartition("/")
    try:
        client.get_model_version(model, number)
    except MlflowException:
        return Link(what, parent.label(), False, f"missing: {model} has no version {number} in the registry; {detail}")
    return Link(what, parent.label(), True, detail if model == name else f"a version of another model; {detail}")


def data_change_link(cfg: PipelineConfig, tags: dict[str, str]) -> Link:
    """The data version before this one (the dataset's parent) and what changed, as the evaluation reported it."""
    what = "data change"
    parent = tags.get("data_parent")
    if parent is None:
        return Link(what, "none", True, "not recorded: registered before data versions were")
    if parent == "none":
        return Link(what, "none", True, "the first version of this data source in the working folder")
    held = find_dataset(cfg, parent)
    summary = tags.get("data_change", "")
    if held is None:
        return Link(what, parent, False, f"missing: the parent data version is not in {Workspace.of(cfg.runtime.workdir).datasets}; {summary}")
    return Link(what, parent, True, summary or f"parent data version in {held}")


def dataset_link(cfg: PipelineConfig, fingerprint: str | None) -> Link:
    """The workspace's dataset with the recorded content fingerprint, and the checksum of the source it was read from."""
    if fingerprint is None:
        return _untagged("dataset", "dataset_fingerprint")
    folder = find_dataset(cfg, fingerprint)
    if folder is None:
        datasets = Workspace.of(cfg.runtime.workdir).datasets
        return Link("dataset", fingerprint, False, f"missing: no dataset with this fingerprint in {datasets}")
    manifest = read_manifest(folder)
    return Link("dataset", fingerprint, True, f"{folder}; source checksum {manifest['source_checksum']}")


def config_link(run_id: str | None, recorded: str | None) -> Link:
    """The resolved config logged to the run, its hash recomputed and compared with the recorded `config_hash`."""
    import mlflow  # noqa: PLC0415
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    what = "resolved config"
    if recorded is None:
        return _untagged(what, "config_hash")
    try:
        resolved = mlflow.artifacts.load_dict(f"runs:/{run_id}/{RESOLVED_CONFIG}")
    except (MlflowException, OSError, ValueError) as err:
        return Link(what, recorded, False, f"missing: cannot read the run's {RESOLVED_CONFIG}: {first_line(err)}")
    actual = config_hash(resolved)
    if actual != recorded:
        return Link(what, recorded, False, f"does not match: the run's {RESOLVED_CONFIG} hashes to {actual}")
    return Link(what, recorded, True, f"the run's {RESOLVED_CONFIG} hashes to the same")


def code_link(tags: dict[str, str]) -> Link:
    """The git commit the version was registered from (checked against this checkout), with the package and code versions."""
    recorded = tags.get("code_version")
    same = "" if recorded is None else " (this code: same)" if recorded == code_version() else " (this code: differs)"
    package = f"{DISTRIBUTION} {tags['package_version']}" if "package_version" in tags else "no package version recorded"
    versions = f"{package}, code_version {recorded or 'none'}{same}"
    sha = tags.get("git_sha")
    if sha is None:
        why = "no git SHA recorded (registered outside a git checkout, or before SHAs were)"
        return Link("code", "none", False, f"missing: {why}; {versions}")
    commit, dirty = sha.removesuffix("-dirty"), sha.endswith("-dirty")
    changes = ", with uncommitted changes to tracked files" if dirty else ""
    found = commit_exists(commit)
    if found is None:
        return Link("code", sha, False, f"cannot check: this code does not run from a git checkout{changes}; {versions}")
    if not found:
        return Link("code", sha, False, f"missing: no such commit in this checkout{changes}; {versions}")
    return Link("code", sha, True, f"commit in this checkout{changes}; {versions}")


def _read_flow_run(flow_run_id: UUID) -> tuple[str, Any]:
    """(flow name, flow run) from the Prefect API; without PREFECT_API_URL, opening the client starts a temporary server
    on the database in PREFECT_HOME, where the pipeline's own temporary server kept its runs."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        return client.read_flow(run.flow_id).name, run


def _within(seconds: float, fn: Callable, *args: object) -> Any:  # noqa: ANN401
    """fn(*args), or TimeoutError after `seconds`. It runs in a daemon thread, left behind on a timeout (a temporary
    Prefect server it started is stopped at exit), with the caller's context variables (Prefect's settings are some)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = err

    thread = threading.Thread(target=contextvars.copy_context().run, args=(target,), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _prefect_api() -> str:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME  # noqa: PLC0415

    url = PREFECT_API_URL.value()
    return f"the Prefect API at {url}" if url else f"Prefect's temporary server (database in {PREFECT_HOME.value()})"


def _flow_run_url(flow_run_id: str) -> str:
    """The run's page in the Prefect UI; for a temporary server, where `prefect server start` would show it."""
    from prefect.settings import PREFECT_SERVER_API_HOST, PREFECT_SERVER_API_PORT  # noqa: PLC0415
    from prefect.utilities.urls import url_for  # noqa: PLC0415

    url = url_for("flow-run", obj_id=flow_run_id)
    if url:
        return url
    server = f"http://{PREFECT_SERVER_API_HOST.value()}:{PREFECT_SERVER_API_PORT.value()}"  # `prefect server start`'s address
    local = url_for("flow-run", obj_id=flow_run_id, default_base_url=server)
    return f"{local} under `prefect server start` (the flow's server was temporary; PREFECT_UI_URL is unset)"


def _untagged(what: str, tag: str) -> Link:
    return Link(what, "none", False, f"missing: the version has no {tag} tag (not registered by this pipeline)")


def _aliases_by_version(model) -> dict[str, tuple[str, ...]]:  # noqa: ANN001
    """Version number -> its aliases, from the registered model (version searches may leave aliases out)."""
    by_version: dict[str, tuple[str, ...]] = {}
    for alias, number in sorted(model.aliases.items()):
        by_version[str(number)] = (*by_version.get(str(number), ()), alias)
    return by_version


def _number(tags: dict[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


def _when(milliseconds: float | None) -> datetime:
    """A store's timestamp (ms since the epoch) as local time."""
    return datetime.fromtimestamp((milliseconds or 0) / 1000).astimezone()


def evaluation_inputs(cfg: PipelineConfig, model_uri: str, dataset_dir: Path | None = None) -> tuple[Path, Path]:
    """(dataset, checkpoint) folders of a registered version, from its lineage tags: the checkpoint it was registered
    from, and the workspace's dataset with its data fingerprint unless `dataset_dir` is given (which must hold that data)."""
    version = model_version(connect(cfg), *parse_model_uri(model_uri, "--model"))
    what = f"--model {model_uri} (v{version.version})"
    if "checkpoint" not in version.tags:
        raise UsageError(f"{what}: no checkpoint tag, so not registered by this pipeline; evaluate its checkpoint with --checkpoint")
    checkpoint = Path(version.tags["checkpoint"])
    if not checkpoint.is_dir():
        raise UsageError(f"{what}: its checkpoint folder {checkpoint} no longer exists (or is on another machine)")
    wanted = version.tags["dataset_fingerprint"]
    if dataset_dir is None:
        dataset_dir = find_dataset(cfg, wanted)
        if dataset_dir is None:
            datasets = Workspace.of(cfg.runtime.workdir).datasets
            raise UsageError(f"{what}: no dataset with its data (fingerprint {wanted[:12]}) in {datasets}; "
                             "run `gan-pipeline ingest` with its data config, or give --dataset")
    elif (held := read_manifest(dataset_dir)["fingerprint"]) != wanted:
        raise UsageError(f"--dataset {dataset_dir}: holds other data than {what} was trained on (fingerprint {held[:12]}, "
                         f"not {wanted[:12]}); leave --dataset out to find its own")
    return dataset_dir, checkpoint
