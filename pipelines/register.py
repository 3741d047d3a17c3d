"""Stage 4: log the run to MLflow, register the EMA generator, and promote it if it beats the champion."""

import dataclasses
import json
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from prefect import task

from gan import checkpoint as ckpt
from gan import data, sampling, watchdog
from gan.latent import Latent
from pipelines import head_to_head, promotion
from pipelines.config import PipelineConfig, UsageError, fingerprint
from pipelines.ingest import find_dataset
from pipelines.runtime import GAN_DIR, Workspace, code_tags, tracking_uri
from pipelines.registry_client import (
    CHALLENGER, CHAMPION, PROMOTION_TAG, RESOLVED_CONFIG, STATE_DIGEST_TAG, TRAINING_STATE, connect, is_local, model_version, parse_model_uri,
)
from pipelines.stages import maybe_fail, maybe_kill, retry_unless_user_error
from pipelines.warm_start import Parent
from pipelines.yardstick import BUNDLE

MODEL_CODE = Path(__file__).with_name("generator_model.py")


def _experiment_id(client, cfg: PipelineConfig) -> str:  # noqa: ANN001
    """The experiment's id, creating it; a local store keeps its artifacts in the workspace too."""
    experiment = client.get_experiment_by_name(cfg.registry.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = Workspace.of(cfg.runtime.workdir).mlflow_artifacts.as_uri() if is_local(cfg) else None
    return client.create_experiment(cfg.registry.experiment, artifact_location=location)


def config_hash(resolved: dict) -> str:
    """The `config_hash` lineage tag: a hash of the resolved config as logged to the run."""
    return fingerprint(resolved)


def _flatten(config: dict) -> dict[str, str]:
    return {f"{section}.{key}": str(value) for section, values in config.items() for key, value in values.items()}


def _log_history(client, run_id: str, history: list[dict]) -> None:  # noqa: ANN001
    from mlflow.entities import Metric  # noqa: PLC0415

    now = int(time.time() * 1000)
    rows = [Metric(k, float(v), now, int(h["step"])) for h in history for k, v in h.items() if k != "step"]
    for start in range(0, len(rows), 1000):
        client.log_batch(run_id, metrics=rows[start : start + 1000])


def _existing_version(client, name: str, lineage_key: str):  # noqa: ANN001, ANN202
    """The version already registered for this exact checkpoint and evaluation, if any (re-runs stay idempotent)."""
    if not client.search_registered_models(f"name = '{name}'"):
        return None
    return next((v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get("lineage_key") == lineage_key), None)


def _promote(client, cfg: PipelineConfig, name: str, version, report: dict, bundle: Path, refused: str | None = None) -> tuple[bool, str]:  # noqa: ANN001
    """challenger -> this version; champion -> this version if the gate says so (pipelines/promotion.py), with a champion
    measured on other data measured again on this version's yardstick (`bundle`) first. `refused`: why the gate may not
    even compare (this version's data does not fit the model's yardstick). The reason becomes the version's `promotion` tag."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    client.set_registered_model_alias(name, CHALLENGER, version.version)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    if champion is not None and str(champion.version) == str(version.version):  # moved before a kill; its reason is in the history
        client.set_model_version_tag(name, version.version, PROMOTION_TAG, "already champion")
        return True, "already champion"
    standing = promotion.Standing.of_report(version.version, report)
    held, how = None if champion is None else promotion.Standing.of_tags(champion.version, champion.tags), ""
    if refused is None and champion is not None and (held is None or held.yardstick != standing.yardstick) and bundle.is_file():
        held, how = head_to_head.head_to_head(client, cfg, name, champion, bundle, str(version.version))
        refused = how if held is None else None
    if refused is not None:
        promoted, why = False, refused
    else:
        champion_version = None if champion is None else str(champion.version)
        promoted, why = promotion.decide(standing, held, champion_version, cfg.registry.max_memorised_share, how)
    if promoted:
        move_champion(client, name, str(version.version), why, by="promotion gate")
    client.set_model_version_tag(name, version.version, PROMOTION_TAG, why)
    return promoted, why


def move_champion(client, name: str, version: str, why: str, by: str | None = None, rollback: bool = False) -> str | None:  # noqa: ANN001
    """Point `champion` at `version` and append the move to the model's champion history; returns the previous champion."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        previous = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, CHAMPION, version)
    history = client.get_registered_model(name).tags.get(promotion.HISTORY_TAG)
    client.set_registered_model_tag(name, promotion.HISTORY_TAG, promotion.record(history, version, previous, why, by, rollback))
    return previous


def promote(cfg: PipelineConfig, name: str, version: str, why: str) -> str:
    """A person's promotion: champion -> version, whatever the gate would say, recorded with who and why."""
    client = connect(cfg)
    found = model_version(client, name, version)
    version = str(found.version)
    previous = move_champion(client, name, version, why)
    client.set_model_version_tag(name, version, PROMOTION_TAG, f"promoted by {promotion.user()}: {why}")
    return f"{name}: champion v{version} (was {'v' + previous if previous else 'none'})" + head_to_head.follow_champion(client, name, found)


def rollback(cfg: PipelineConfig, name: str, why: str) -> str:
    """champion -> the champion before it, per the recorded history."""
    client = connect(cfg)
    current = str(model_version(client, name, CHAMPION).version)
    previous = promotion.previous_champion(client.get_registered_model(name).tags.get(promotion.HISTORY_TAG), current)
    if previous is None:
        raise UsageError(f"{name}: no champion before v{current} on record; use `gan-pipeline promote {name} VERSION`")
    move_champion(client, name, previous, f"rollback from v{current}: {why}", rollback=True)
    client.set_model_version_tag(name, previous, PROMOTION_TAG, f"rolled back to by {promotion.user()} from v{current}: {why}")
    return f"{name}: champion v{previous} (was v{current})" + head_to_head.follow_champion(client, name, client.get_model_version(name, previous))


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
    elif (held := data.read_manifest(dataset_dir)["fingerprint"]) != wanted:
        raise UsageError(f"--dataset {dataset_dir}: holds other data than {what} was trained on (fingerprint {held[:12]}, "
                         f"not {wanted[:12]}); leave --dataset out to find its own")
    return dataset_dir, checkpoint


def _log_run(client, run_id: str, cfg: PipelineConfig, lineage: dict, state: dict, checkpoint_dir: Path, report_path: Path, report: dict) -> None:  # noqa: ANN001, E501
    """Params, resolved config, lineage tags, per-step losses, sample grids and the evaluation."""
    import mlflow  # noqa: PLC0415

    mlflow.log_params(_flatten(cfg.model_dump(mode="json")))
    mlflow.log_dict(cfg.model_dump(mode="json"), RESOLVED_CONFIG)
    mlflow.set_tags(lineage)
    events = json.loads(state["events_json"])  # the watchdog's warnings, as tags a run search can filter on
    mlflow.set_tags({f"watchdog.{kind}": str(sum(e["kind"] == kind for e in events)) for kind in (watchdog.ROLLBACK, watchdog.D_WINS, watchdog.COLLAPSE)})
    snapshots = [{"step": q["step"], "quick_fid": q["fid"], "quick_fid_train_seconds": q["seconds"]} for q in ckpt.snapshots_of(state)]
    _log_history(client, run_id, ckpt.history_of(state) + snapshots)
    if (checkpoint_dir / "samples").is_dir():
        mlflow.log_artifacts(str(checkpoint_dir / "samples"), "samples")
    mlflow.log_artifacts(str(report_path.parent), "evaluation")  # with yardstick.pt: the yardstick it was measured on
    mlflow.log_artifact(str(checkpoint_dir / ckpt.STATE_FILE), TRAINING_STATE)  # the full training state: warm starts from it
    mlflow.log_metrics({f"eval_{k}": float(v) for k, v in report["model"].items() if k != "class_histogram"})
    mlflow.log_metrics({f"floor_{k}": float(v) for k, v in report["real_vs_real"].items() if k != "class_histogram"})
    mlflow.log_metric("classifier_test_accuracy", report["classifier_test_accuracy"])
    if "conditional" in report:
        mlflow.log_metrics({"eval_min_label_accuracy": report["conditional"]["min_accuracy"], "eval_mean_label_accuracy": report["conditional"]["mean_accuracy"]})
    if "infogan" in report:
        mlflow.log_metric("eval_code_class_agreement", report["infogan"]["code_class_agreement"])
    if "data_change" in report:
        changes = report["data_change"]
        mlflow.log_metrics({f"data_files_{kind}": float(n) for kind, n in changes["files"].items()})
        if "fid" in changes:
            mlflow.log_metric("data_change_fid", changes["fid"])


def input_schema(latent: Latent) -> "Schema":  # noqa: F821
    """The served model's named inputs: z, plus label (conditional) or code / code_continuous (InfoGAN)."""
    from mlflow.types import Schema, TensorSpec  # noqa: PLC0415

    specs = [TensorSpec(np.dtype(np.float32), (-1, latent.z_dim), "z")]
    if latent.num_classes:
        specs.append(TensorSpec(np.dtype(np.int64), (-1,), "label"))
    if latent.info_categorical:
        specs.append(TensorSpec(np.dtype(np.int64), (-1,), "code"))
    if latent.info_continuous:
        specs.append(TensorSpec(np.dtype(np.float32), (-1, latent.info_continuous), "code_continuous"))
    return Schema(specs)


def _log_generator(blob: dict, latent: Latent) -> str:
    """The EMA generator (a `checkpoint.generator_blob`) as a pyfunc model from code: weights + config, no pickled classes.
    Returns its URI."""
    import mlflow  # noqa: PLC0415
    from mlflow.models import ModelSignature  # noqa: PLC0415
    from mlflow.types import Schema, TensorSpec  # noqa: PLC0415

    image_shape = blob["image_shape"]
    signature = ModelSignature(inputs=input_schema(latent), outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *image_shape))]))
    requirements = [f"torch=={torch.__version__.split('+')[0]}", "numpy", "pydantic>=2", f"mlflow=={mlflow.__version__}"]
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "generator.pt"
        torch.save(blob, weights)
        with warnings.catch_warnings():  # the explicit signature stands in for an input example
            warnings.filterwarnings("ignore", message=".*input example.*")
            info = mlflow.pyfunc.log_model(
                name="generator", python_model=str(MODEL_CODE), artifacts={"generator": str(weights)},
                code_paths=[str(GAN_DIR)], signature=signature, pip_requirements=requirements,
                metadata={"latent": dataclasses.asdict(latent)},
            )
    return info.model_uri


def register(cfg: PipelineConfig, dataset_dir: str, checkpoint_dir: str, report_path: str, flow_run_id: str | None = None) -> dict:
    """Log params, config, curves, samples, report and model; register a version; move aliases."""
    maybe_fail("register", kill_here=False)
    import mlflow  # noqa: PLC0415

    # 1. Read and check every input before touching the registry.
    manifest = data.read_manifest(Path(dataset_dir))
    report = json.loads(Path(report_path).read_text())
    fid = float(report["model"]["fid"])
    assert math.isfinite(fid), f"evaluation report {report_path} has a non-finite FID {fid}"
    state = ckpt.load(Path(checkpoint_dir))
    events = json.loads(state["events_json"])
    refused = watchdog.verdict(events) or report.get("collapsed")  # the watchdog's, or the evaluation's
    if refused:  # a result, not an exception: the flow ends normally and the CLI exits non-zero with this one line
        print(f"[register] not registered: {refused}")
        return {"model_name": cfg.registry.model_name, "refused": f"{checkpoint_dir}: not registered: {refused}; the evaluation report {report_path} shows the samples"}
    blob = ckpt.generator_blob(state)
    G, model_cfg, latent = ckpt.generator_of(blob)
    resolved_hash = config_hash(cfg.model_dump(mode="json"))
    trained = ckpt.lineage_of(Path(checkpoint_dir))  # what the train stage recorded: its training key and warm start
    parent = trained.get("warm_start")
    lineage = {
        "dataset_fingerprint": manifest["fingerprint"], "dataset_quarantined": str(manifest.get("quarantined", 0)),
        "data_parent": (manifest.get("parent") or {}).get("fingerprint", "none"),
        **({"data_change": report["data_change"]["summary"][:4000]} if "data_change" in report else {}),
        "config_hash": resolved_hash, **code_tags(),
        "prefect_flow_run_id": flow_run_id or "none", "checkpoint": str(checkpoint_dir),
        "lineage_key": fingerprint(str(checkpoint_dir), report_path),
        "training_key": trained.get("training_key", "unknown"), STATE_DIGEST_TAG: ckpt.digest(Path(checkpoint_dir)),
        "warm_start": json.dumps(parent), "parent_version": "none" if parent is None else Parent.of_dict(parent).label(),
    }
    client = connect(cfg)
    name = cfg.registry.model_name
    existing = _existing_version(client, name, lineage["lineage_key"])
    if existing is not None and _decided(existing):  # no alias moves: re-registering an old checkpoint never moves one backwards
        return _already_registered(client, name, existing)

    # 2. The MLflow run: what was trained, how it went, how it scored; then the model itself. A version whose gate
    # never decided (its run was killed in between) is taken as it is, and only the aliases below are still to move.
    started, logging_seconds = time.time(), None
    if existing is None:
        with mlflow.start_run(experiment_id=_experiment_id(client, cfg), run_name=f"{model_cfg.arch}-{resolved_hash[:8]}") as run:
            _log_run(client, run.info.run_id, cfg, lineage, state, Path(checkpoint_dir), Path(report_path), report)
            logging_started = time.time()
            model_uri = _log_generator(blob, latent)
        scores = {**promotion.Standing.of_report("", report).tags(), "floor_fid": str(report["real_vs_real"]["fid"])}
        version = mlflow.register_model(model_uri, name, tags={**lineage, **scores, **cfg.registry.tags})
        logging_seconds, run_id = round(time.time() - logging_started, 2), run.info.run_id
        maybe_kill("register", cfg.runtime.workdir, f"with {name} v{version.version} registered and its aliases not yet moved")
    else:
        version, run_id = existing, existing.run_id
        print(f"[register] {name} v{version.version} was registered by a run that stopped before the promotion gate; deciding now")

    # 3. The model's yardstick, and the aliases; the `promotion` tag, written last, records that the gate has decided.
    refused = head_to_head.model_yardstick(client, cfg, name, version, report, G, latent)
    promoted, why = _promote(client, cfg, name, version, report, Path(report_path).parent / BUNDLE, refused)
    print(f"[register] {name} v{version.version} is challenger; champion: {why}")
    return {
        "model_name": name, "version": version.version, "run_id": run_id, "champion": promoted, "reason": why,
        "model_logging_seconds": logging_seconds, "seconds": round(time.time() - started, 2),
    }


def _decided(version) -> bool:  # noqa: ANN001 - an MLflow ModelVersion
    """Whether the promotion gate has decided this version (or it predates the gate and carries no scores to decide on)."""
    return PROMOTION_TAG in version.tags or promotion.Standing.of_tags(version.version, version.tags) is None


def _already_registered(client, name: str, existing) -> dict:  # noqa: ANN001
    """The summary of a re-run whose checkpoint and evaluation are registered and promoted already: nothing moves."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        champion = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        champion = None
    why = f"already registered as v{existing.version}; champion is {'v' + champion if champion else 'none'}"
    print(f"[register] {why}")
    return {"model_name": name, "version": existing.version, "run_id": existing.run_id, "champion": champion == str(existing.version),
            "reason": why}


@task(name="register", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error)
def register_task(cfg: PipelineConfig, dataset_dir: str, checkpoint_dir: str, report_path: str, flow_run_id: str | None) -> dict:
    """Evaluated checkpoint -> MLflow run + registered version (idempotent per checkpoint and report)."""
    return register(cfg, dataset_dir, checkpoint_dir, report_path, flow_run_id)


def load_served(cfg: PipelineConfig, model_uri: str) -> tuple["mlflow.pyfunc.PyFuncModel", Latent]:  # noqa: F821
    """A registered generator by URI (e.g. models:/NAME@champion), in this process, and its latent layout."""
    import mlflow  # noqa: PLC0415
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    connect(cfg)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as err:
        raise data.DataError(f"--model {model_uri}: cannot load it from {tracking_uri(Workspace.of(cfg.runtime.workdir))}: {err.message}") from None
    layout = (model.metadata.metadata or {}).get("latent")
    latent = Latent(**layout) if layout else Latent(model.metadata.get_input_schema().inputs[0].shape[1])
    return model, latent


def sample_grid(cfg: PipelineConfig, model_uri: str, n: int, out: Path, seed: int, label: int | None = None, per_class: bool = False) -> str:
    """Save samples of a registered generator as a grid: n random ones (all of class `label` if given), or with
    `per_class` one row per class (conditional) or the InfoGAN code figure (rows: categorical code, columns: a continuous code)."""
    from gan.images import save_grid  # noqa: PLC0415

    model, latent = load_served(cfg, model_uri)
    if label is not None and not latent.num_classes:
        raise UsageError(f"--label {label}: {model_uri} is not a conditional model; it takes no label")
    if label is not None and not 0 <= label < latent.num_classes:
        raise UsageError(f"--label {label}: {model_uri} knows classes 0..{latent.num_classes - 1}")
    nrow = 8
    if per_class and latent.info_categorical and latent.info_continuous:
        inputs, nrow = sampling.code_sweep_inputs(latent, 10, seed), 10
    elif per_class and (latent.num_classes or latent.info_categorical):
        inputs, nrow = sampling.per_class_inputs(latent, 10, seed), 10
    elif per_class:
        raise UsageError(f"--per-class: {model_uri} is unconditional and has no categorical code; there are no classes to lay out")
    else:
        inputs = sampling.random_inputs(latent, n, seed, label=label)
    images = model.predict(inputs.as_dict())  # [n, C, H, W] in [0, 1]
    return str(save_grid(images, out, nrow=nrow))
