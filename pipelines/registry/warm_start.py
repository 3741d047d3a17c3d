"""Warm starts: `train.init_from` resolved to a parent's training state, checked against this run before it trains.

A parent is a registered version (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, or `@ALIAS` of registry.model_name), whose
full training state travels with it as an artifact of its MLflow run (`training_state/state.pt`, downloaded once into
<workdir>/warm-starts/ and checked against the sha256 the version recorded), or a checkpoint folder. What a warm start
takes from its parent and what starts again is `gan.state.warm_start`'s rule; the run's identity (its Ray Train run
name) includes the parent's state digest, and its checkpoints name the parent.
"""

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gan import checkpoint as ckpt
from gan.config import ConfigError, ModelConfig
from pipelines.config import MODEL_URI, OWN_ALIAS, PipelineConfig
from pipelines.errors import UsageError, first_line
from pipelines.registry.client import STATE_DIGEST_TAG, TRAINING_STATE, absent, connect, download_once, model_version
from pipelines.workspace import Workspace


@dataclass(frozen=True)
class Parent:
    """A warm start's parent, as a run records it (in its checkpoints' lineage and its registered version's tags)."""

    source: str  # what train.init_from named, '@ALIAS' spelt out
    digest: str  # sha256 of its state.pt: the warm-started run's identity includes it
    step: int  # the steps it had trained
    version: str | None = None  # "NAME/VERSION" of a registered parent
    run_id: str | None = None  # its MLflow run, which keeps its training state
    dataset: str | None = None  # the data fingerprint it was trained on (a registered parent's tag)
    folder: str | None = None  # where its state.pt is when not in its run: a checkpoint folder

    def label(self) -> str:
        if self.version:
            name, _, number = self.version.rpartition("/")
            return f"{name} v{number}"
        return f"checkpoint {self.folder}"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of_dict(cls, d: dict | None) -> "Parent | None":
        return None if d is None else cls(**d)


def resolve(cfg: PipelineConfig, image_shape: tuple[int, ...] | None, num_classes: int | None = None,
            data_fingerprint: str | None = None, training_key: str | None = None, say: bool = True) -> Parent | None:
    """`train.init_from` as a parent whose training state is on this machine and fits this run (one-line ConfigErrors
    otherwise); None for a cold start (no init_from, or an alias no version holds yet with train.init_missing 'cold').

    With this run's data fingerprint and training key: a registered parent trained on this very data version with this
    very training config and code is no new work, and its own parent is returned instead, so the run is the parent's run
    again (its cached result, or a resume of its finished checkpoint: nothing trains)."""
    ref = reference(cfg)
    if not ref:
        return None
    if MODEL_URI.fullmatch(ref):
        parent, tags = _registered(cfg, ref)
        if parent is None:
            return None
        if data_fingerprint is not None and tags.get("dataset_fingerprint") == data_fingerprint and tags.get("training_key") == training_key:
            own = Parent.of_dict(json.loads(tags.get("warm_start", "null")))
            print(f"[warm-start] {parent.label()} was trained on this very data version ({data_fingerprint[:12]}) with this training "
                  f"config and code: no new work to warm-start; its own run is taken again ({own.label() if own else 'a cold start'}), "
                  "so nothing trains", flush=True)
            return own
    else:
        parent = _folder(cfg, ref)
    check(cfg, parent, ckpt.load(state_file(cfg, parent).parent), image_shape, num_classes)
    if say:
        print(f"[warm-start] from {parent.label()} (step {parent.step}, state {parent.digest[:12]})", flush=True)
    return parent


def reference(cfg: PipelineConfig) -> str:
    """train.init_from with '@ALIAS' spelt out as models:/<registry.model_name>@ALIAS."""
    ref = cfg.train.init_from
    return f"models:/{cfg.registry.model_name}{ref}" if OWN_ALIAS.fullmatch(ref) else ref


def _problem(cfg: PipelineConfig, why: str) -> ConfigError:
    return ConfigError(f"config error: train.init_from = {cfg.train.init_from!r}: {why}")


def _cold_or(cfg: PipelineConfig, why: str) -> tuple[None, dict]:
    """A parent that is not there yet: a cold start under train.init_missing 'cold', else the one-line error."""
    if cfg.train.init_missing == "cold":
        print(f"[warm-start] {why}: a cold start (train.init_missing 'cold')", flush=True)
        return None, {}
    raise _problem(cfg, f"{why}; train.init_missing 'cold' starts from scratch instead")


def _registered(cfg: PipelineConfig, ref: str) -> tuple[Parent | None, dict]:
    """The registered version `ref` names, with its training state on this machine, and its tags; (None, {}) for a cold
    start (an alias no version holds yet, a model not registered yet, a champion without a training state, under
    train.init_missing 'cold')."""
    parsed = MODEL_URI.fullmatch(ref)
    name = parsed["name"]
    try:
        version = model_version(connect(cfg), name, parsed["alias"] or parsed["number"])
    except UsageError as err:
        if parsed["alias"]:  # a schedule's first run: no champion yet
            return _cold_or(cfg, str(err))
        raise _problem(cfg, str(err)) from None  # a version number never appears later
    tags, label = version.tags, f"{name} v{version.version}"
    folder = tags.get("checkpoint")
    if STATE_DIGEST_TAG not in tags or not version.run_id:  # registered before training states were kept with the run
        if folder is not None and (Path(folder) / ckpt.STATE_FILE).is_file():
            print(f"[warm-start] {label} keeps no training state with its run; its checkpoint folder {folder} is here", flush=True)
            return replace(_folder(cfg, folder), source=ref, version=f"{name}/{version.version}", dataset=tags.get("dataset_fingerprint")), tags
        why = f"{label} keeps no training state with its run (registered before warm starts were)"
        if parsed["alias"]:
            return _cold_or(cfg, why + (f" and its checkpoint folder {folder} is not here" if folder else ""))
        raise _problem(cfg, why + (f"; its checkpoint folder was {folder}: name that instead" if folder else ""))
    parent = Parent(ref, tags[STATE_DIGEST_TAG], 0, f"{name}/{version.version}", version.run_id, tags.get("dataset_fingerprint"))
    return replace(parent, step=int(ckpt.load(state_file(cfg, parent).parent)["step"])), tags


def _folder(cfg: PipelineConfig, ref: str) -> Parent:
    folder = Path(ref).expanduser().resolve()
    if not (folder / ckpt.STATE_FILE).is_file():
        raise _problem(cfg, f"{folder} holds no {ckpt.STATE_FILE}; expected a training checkpoint folder" if folder.is_dir() else
                       f"no such folder {folder}; expected models:/NAME@ALIAS, models:/NAME/VERSION, @ALIAS or a checkpoint folder")
    return Parent(ref, ckpt.digest(folder), int(ckpt.load(folder)["step"]), folder=str(folder))


def state_file(cfg: PipelineConfig, parent: Parent) -> Path:
    """The parent's state.pt on this machine, checked to be the one the run is named after: its checkpoint folder's, or its
    registered version's, downloaded once from the run's artifacts into <workdir>/warm-starts/<run id>/."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    if parent.folder is not None:
        folder = Path(parent.folder)
    else:
        folder = Workspace.of(cfg.runtime.workdir).root / "warm-starts" / str(parent.run_id)
        try:
            download_once(cfg, f"runs:/{parent.run_id}/{TRAINING_STATE}/{ckpt.STATE_FILE}", folder)
        except (MlflowException, OSError) as err:
            if not absent(err):
                raise  # the store did not answer: the task's retry may reach it
            raise _problem(cfg, f"{parent.label()}'s training state is not in its run {parent.run_id} ({first_line(err)})") from None
    if ckpt.digest(folder) != parent.digest:
        fix = f"delete {folder} to download it again" if parent.folder is None else "it changed since; name it again to start from it"
        raise _problem(cfg, f"{folder / ckpt.STATE_FILE} does not hash to the {parent.digest[:12]} that {parent.label()} recorded; {fix}")
    return folder / ckpt.STATE_FILE


def check(cfg: PipelineConfig, parent: Parent, state: dict, image_shape: tuple[int, ...] | None, num_classes: int | None) -> None:
    """A parent must have this run's networks (and its optimiser, when the optimisers come along too), and have drawn this
    data's image shape (and its class count, when the networks take a class): a ConfigError naming what differs."""
    parents = ckpt.config_of(state)
    theirs, ours = ModelConfig.model_validate(parents["model"]), cfg.model
    differ = [f"model.{key} {getattr(theirs, key)!r} (this run: {getattr(ours, key)!r})"
              for key in type(ours).model_fields if getattr(theirs, key) != getattr(ours, key)]
    if differ:
        raise _problem(cfg, f"{parent.label()} has other networks: {', '.join(differ)}; a warm start needs the same model section")
    optimizer = parents.get("optim", {}).get("optimizer", "adam")
    if cfg.train.init_optimizer and optimizer != cfg.optim.optimizer:
        raise _problem(cfg, f"{parent.label()} trained with optim.optimizer {optimizer!r} (this run: {cfg.optim.optimizer!r}): its "
                       "optimiser state cannot serve this one; leave train.init_optimizer off")
    if image_shape is not None and tuple(state["image_shape"]) != tuple(image_shape):
        raise _problem(cfg, f"{parent.label()} was trained on {tuple(state['image_shape'])} images; this data is {tuple(image_shape)} "
                       "(data.channels, data.image_size)")
    if num_classes is not None and ours.conditional and int(state["num_classes"]) != num_classes:
        raise _problem(cfg, f"{parent.label()} draws {int(state['num_classes'])} classes; this data has {num_classes}")
