"""The MLflow registry as the pipeline reaches it: the store the config names, versions by number or alias, the names of
the tags and artifacts the pipeline keeps there, and artifacts downloaded once into the working folder."""

import shutil
from pathlib import Path, PurePosixPath

from gan import files
from pipelines import console
from pipelines.config import MODEL_URI, PipelineConfig, fingerprint
from pipelines.errors import UsageError
from pipelines.workspace import Workspace, tracking_uri

CHAMPION, CHALLENGER = "champion", "challenger"
PROMOTION_TAG = "promotion"  # the gate's reason, on each version it has decided
RESOLVED_CONFIG = "config/resolved.json"  # the run's artifact of the resolved config; `config_hash` is its hash
TRAINING_STATE = "training_state"  # the run's artifact folder of the full training state (state.pt): warm starts take it
STATE_DIGEST_TAG = "training_state_sha256"  # on the version: that state.pt's sha256, which a warm start checks
YARDSTICK_TAG = "yardstick"  # on the registered model: the yardstick its first version fixed (JSON, with its bundle's URI)
SCORE_TAG = "score."  # + a yardstick's key, on a version: its scores measured again on that yardstick (JSON), computed once


def config_hash(resolved: dict) -> str:
    """The `config_hash` lineage tag: a hash of the resolved config as logged to the run."""
    return fingerprint(resolved)


def connect(cfg: PipelineConfig) -> "mlflow.MlflowClient":  # noqa: F821
    """Point MLflow at the configured store (creating the workspace for a local one)."""
    import mlflow  # noqa: PLC0415

    console.attach_mlflow()
    workspace = Workspace.of(cfg.runtime.workdir)
    if is_local(cfg):
        workspace.root.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(workspace))
    return mlflow.MlflowClient()


def is_local(cfg: PipelineConfig) -> bool:
    """True for the embedded SQLite store in the workspace (not a server named by MLFLOW_TRACKING_URI)."""
    workspace = Workspace.of(cfg.runtime.workdir)
    return tracking_uri(workspace) == f"sqlite:///{workspace.mlflow_db}"


def parse_model_uri(uri: str, what: str) -> tuple[str, str]:
    """models:/NAME@ALIAS or models:/NAME/VERSION -> (NAME, ALIAS or VERSION); a UsageError naming `what` otherwise."""
    parsed = MODEL_URI.fullmatch(uri)
    if parsed is None:
        raise UsageError(f"{what} {uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return parsed["name"], parsed["alias"] or parsed["number"]


def model_version(client, name: str, version_or_alias: str) -> "ModelVersion":  # noqa: ANN001, F821
    """A model version by number or alias, or a UsageError naming what exists."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        if version_or_alias.isdigit():
            return client.get_model_version(name, version_or_alias)
        return client.get_model_version_by_alias(name, version_or_alias)
    except MlflowException:
        model = registered_model(client, name)
        versions = ", ".join(f"v{n}" for n in sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'")))
        aliases = ", ".join(f"{alias} = v{number}" for alias, number in sorted(model.aliases.items()))
        raise UsageError(f"{name}: no version {version_or_alias!r}; registered versions: {versions or 'none'}; "
                         f"aliases: {aliases or 'none'}") from None


def registered_model(client, name: str) -> "RegisteredModel":  # noqa: ANN001, F821
    """The registered model of this name, or a UsageError naming the ones there are."""
    found = client.search_registered_models(f"name = '{name}'")
    if not found:
        models = ", ".join(m.name for m in client.search_registered_models(max_results=20))
        raise UsageError(f"no registered model {name!r}; registered models: {models or 'none'}")
    return found[0]


def download_once(cfg: PipelineConfig, artifact_uri: str, folder: Path) -> Path:
    """The file at `artifact_uri` (runs:/RUN/PATH or models:/...), downloaded once into `folder` and published there by one
    rename (a killed download leaves nothing to be taken for whole); its local path. The store's errors pass through:
    `absent` tells a missing artifact from a store that did not answer."""
    import mlflow  # noqa: PLC0415

    target = folder / PurePosixPath(artifact_uri).name
    if not target.is_file():
        connect(cfg)
        files.remove_stale_temporaries(folder.parent)
        if folder.is_dir():  # a folder without its file was not published by this code
            shutil.rmtree(folder)
        with files.written_aside(folder) as tmp:
            found = mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(tmp / "download"))
            Path(found).rename(tmp / target.name)
            shutil.rmtree(tmp / "download")
    return target


def absent(err: BaseException) -> bool:
    """The registry answered that a run, version or artifact does not exist (not that it could not be reached)."""
    return getattr(err, "error_code", None) == "RESOURCE_DOES_NOT_EXIST" or isinstance(err, FileNotFoundError)
