"""Stage 4: log the run to MLflow, register the EMA generator, and promote it if it beats the champion."""

import dataclasses
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from prefect import task

from gan import checkpoint as ckpt, watchdog
from gan.data.manifest import read_manifest
from gan.latent import Latent
from pipelines.config import PipelineConfig, fingerprint
from pipelines.errors import InvalidScores, retry_unless_user_error
from pipelines.faults import drill_refusal, maybe_fail, maybe_kill
from pipelines.provenance import GAN_DIR, code_tags
from pipelines.registry import head_to_head, promotion
from pipelines.registry.champion import move_champion
from pipelines.registry.client import (
    CHALLENGER, CHAMPION, PROMOTION_TAG, RESOLVED_CONFIG, STATE_DIGEST_TAG, TRAINING_STATE, config_hash, connect, is_local,
)
from pipelines.registry.serving import MODEL_CODE, input_schema
from pipelines.registry.warm_start import Parent
from pipelines.stages import Step
from pipelines.workspace import Workspace
from pipelines.yardstick import BUNDLE


LOGGED_MODEL_TAG = "logged_model"  # a run's model URI, set as its last entry: the run is whole and can be registered


def _experiment_id(client, cfg: PipelineConfig) -> str:  # noqa: ANN001
    """The experiment's id, creating it; a local store keeps its artifacts in the workspace too."""
    experiment = client.get_experiment_by_name(cfg.registry.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = Workspace.of(cfg.runtime.workdir).mlflow_artifacts.as_uri() if is_local(cfg) else None
    return client.create_experiment(cfg.registry.experiment, artifact_location=location)


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


def _logged_run(client, experiment_id: str, lineage_key: str) -> tuple[str | None, str | None]:  # noqa: ANN001
    """(run id, model URI) of the newest run an earlier attempt logged whole for this checkpoint and evaluation, else
    (None, None). The runs earlier attempts left half-logged (failed or killed while logging) are deleted: a retry leaves
    one run, the one its version is registered from."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.lineage_key = '{lineage_key}'", order_by=["attributes.start_time DESC"])
    for run in runs:
        if LOGGED_MODEL_TAG not in run.data.tags and run.info.status != "FINISHED":
            client.delete_run(run.info.run_id)
    whole = [run for run in runs if LOGGED_MODEL_TAG in run.data.tags]
    return (whole[0].info.run_id, whole[0].data.tags[LOGGED_MODEL_TAG]) if whole else (None, None)


def _promote(client, cfg: PipelineConfig, name: str, version, report: dict, bundle: Path, refused: str | None = None) -> tuple[bool, str]:  # noqa: ANN001
    """challenger -> this version; champion -> this version if the gate says so (pipelines/registry/promotion.py), with a champion
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
    report = json.loads(Path(report_path).read_text())
    unsound = promotion.Standing.of_report("", report).unsound()
    if unsound:  # the gate could not compare it: never registered (nor retried, nor stripped by `python -O` as an assert)
        raise InvalidScores(f"evaluation report {report_path}: {'; '.join(unsound)}: scores the promotion gate cannot compare, "
                            "so the model is not registered; its samples are beside the report")
    manifest = read_manifest(Path(dataset_dir))
    state = ckpt.load(Path(checkpoint_dir))
    events = json.loads(state["events_json"])
    trained = ckpt.lineage_of(Path(checkpoint_dir))  # what the train stage recorded: its training key, warm start, drill
    refused = watchdog.verdict(events) or report.get("collapsed") or drill_refusal(trained)  # the watchdog's, the evaluation's, a drill's
    if refused:  # a result, not an exception: the flow ends normally and the CLI exits non-zero with this one line
        print(f"[register] not registered: {refused}")
        return {"model_name": cfg.registry.model_name, "refused": f"{checkpoint_dir}: not registered: {refused}; the evaluation report {report_path} shows the samples"}
    blob = ckpt.generator_blob(state)
    G, model_cfg, latent = ckpt.generator_of(blob)
    resolved_hash = config_hash(cfg.model_dump(mode="json"))
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
        **({"drill": json.dumps(trained["drill"])} if trained.get("drill") else {}),
    }
    client = connect(cfg)
    name = cfg.registry.model_name
    existing = _existing_version(client, name, lineage["lineage_key"])
    if existing is not None and _decided(existing):  # no alias moves: re-registering an old checkpoint never moves one backwards
        return _already_registered(client, name, existing)

    # 2. The MLflow run: what was trained, how it went, how it scored; then the model itself. A version whose gate
    # never decided (its run was killed in between) is taken as it is, and only the aliases below are still to move.
    # A run an earlier attempt logged whole (its error came before the version) is registered, not logged again.
    started, logging_started, logging_seconds = time.time(), None, None
    if existing is None:
        experiment_id = _experiment_id(client, cfg)
        run_id, model_uri = _logged_run(client, experiment_id, lineage["lineage_key"])
        if run_id is None:
            tags = {"lineage_key": lineage["lineage_key"]}  # from the start: a half-logged run is found too
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"{model_cfg.arch}-{resolved_hash[:8]}", tags=tags) as run:
                _log_run(client, run.info.run_id, cfg, lineage, state, Path(checkpoint_dir), Path(report_path), report)
                logging_started = time.time()
                model_uri = _log_generator(blob, latent)
                mlflow.set_tag(LOGGED_MODEL_TAG, model_uri)  # the run is whole
            run_id = run.info.run_id
        else:
            print(f"[register] MLflow run {run_id} was logged by an attempt that stopped before registering it; registering it now")
        maybe_fail("register", at="logged")
        scores = {**promotion.Standing.of_report("", report).tags(), "floor_fid": str(report["real_vs_real"]["fid"])}
        version = mlflow.register_model(model_uri, name, tags={**lineage, **scores, **cfg.registry.tags})
        logging_seconds = None if logging_started is None else round(time.time() - logging_started, 2)
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


STEPS = (Step("registered", register_task, lambda cfg, run: (cfg, run["dataset"], run["train"]["checkpoint"], run["report"], run["flow_run_id"])),)


