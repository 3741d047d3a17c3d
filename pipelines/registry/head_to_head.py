"""The registry's yardsticks: the model's, fixed by its first version, and the champion measured again head to head.

- The model's yardstick (tag `yardstick` on the registered model, with the URI of the `yardstick.pt` its first version's
  run keeps): every version is measured on it too (tags `yardstick_fid`, `yardstick_fid_std`), so a model's versions read
  on one scale across data versions. Data it cannot measure (another image shape or class set) is refused by the gate;
  a version a person makes champion anyway brings its own yardstick to the model (`follow_champion`).
- Head to head: a champion measured on other data than the challenger is measured again on the challenger's yardstick,
  from its generator as the registry keeps it; the score is kept on its version (`score.<yardstick key>`), computed once.

A registry that does not answer raises (the register task is retried); only a definite absence (no such artifact, no
generator of this pipeline) becomes a stated reason.
"""

import json
import tempfile
from pathlib import Path

import torch

from gan import checkpoint as ckpt
from gan.latent import Latent
from gan.saved import ForeignFile, load_tensors
from pipelines.config import PipelineConfig
from pipelines.errors import first_line
from pipelines.registry import promotion
from pipelines.registry.client import SCORE_TAG, YARDSTICK_TAG, absent, download_once
from pipelines.workspace import Workspace
from pipelines.yardstick import BUNDLE, Instrument, Yardstick, shape


def head_to_head(client, cfg: PipelineConfig, name: str, champion, bundle: Path, challenger: str) -> tuple[promotion.Standing | None, str]:  # noqa: ANN001
    """The champion measured again on the challenger's yardstick (its reference data, sample count and seeds), from its
    generator as the registry keeps it: its standing and how it was measured, or (None, why it cannot be)."""
    try:
        instrument = Instrument.load(bundle, cfg.eval.inception_weights)
    except ValueError as err:  # an Inception yardstick without its weights file here
        return None, f"champion v{champion.version} cannot be measured on v{challenger}'s yardstick: {err}"
    measure, trained_on = instrument.yardstick, champion.tags.get("dataset_fingerprint", "unknown")
    scores = measured_again(client, cfg, name, champion, instrument)
    if isinstance(scores, str):
        return None, (f"champion v{champion.version} cannot be measured on v{challenger}'s yardstick: {scores}; "
                      f"move it with `gan-pipeline promote`")
    held = promotion.Standing(str(champion.version), scores["fid"], scores["fid_std"], measure.extractor, measure.num_images,
                              float(champion.tags.get("memorised_share", 0.0)), measure.key, measure.dataset)
    return held, f"head to head on v{challenger}'s data {measure.dataset[:12]} (v{champion.version} was trained on {trained_on[:12]})"


def measured_again(client, cfg: PipelineConfig, name: str, version, instrument: Instrument, G: torch.nn.Module | None = None,  # noqa: ANN001
                   latent: Latent | None = None) -> dict | str:
    """A registered version's FID (and its bootstrap spread) on another yardstick: kept as its `score.<key>` tag, computed
    once (from `G` if given, else its generator downloaded from the registry); a string says why it cannot be measured."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    measure = instrument.yardstick
    tag = SCORE_TAG + measure.key
    if tag in version.tags:
        return json.loads(version.tags[tag])
    if G is None:
        try:
            G, latent, image_shape = registered_generator(name, str(version.version))
        except (MlflowException, OSError, KeyError, ForeignFile) as err:
            if isinstance(err, (KeyError, ForeignFile)) or absent(err):  # not a model this pipeline logged, or gone
                return f"its generator cannot be read from the registry ({first_line(err)})"
            raise
        if image_shape != measure.image_shape:
            return f"it draws {shape(image_shape)} images, the yardstick's are {shape(measure.image_shape)}"
    if latent.num_classes and latent.num_classes != len(measure.class_names):
        return f"it draws {latent.num_classes} classes, the yardstick's data has {len(measure.class_names)}"
    scores = instrument.measure(G, latent, cfg.eval.ray_embed_min_images, cfg.eval.coverage_min_fraction)
    kept = {"fid": scores["fid"], "fid_std": scores["fid_bootstrap_std"], "kid": scores["kid"], "num_images": measure.num_images,
            "dataset": measure.dataset}
    client.set_model_version_tag(name, version.version, tag, json.dumps(kept))
    print(f"[register] {name} v{version.version} on the yardstick of data {measure.dataset[:12]}: FID {kept['fid']:.2f} ± {kept['fid_std']:.2f}")
    return kept


def model_yardstick(client, cfg: PipelineConfig, name: str, version, report: dict, G: torch.nn.Module, latent: Latent) -> str | None:  # noqa: ANN001
    """The model's yardstick, fixed by the first version registered with one, and this version measured on it (tags
    `yardstick_fid`, `yardstick_fid_std`). Returns why this version cannot be measured on it, if it cannot: the gate
    then refuses it, in that one line."""
    own = report.get("yardstick")
    if own is None:  # evaluated before yardsticks were kept
        return None
    fixed = client.get_registered_model(name).tags.get(YARDSTICK_TAG)
    if fixed is None:
        fixed = fix(client, name, version, report)
        print(f"[register] {name}'s yardstick is v{version.version}'s: {own['extractor']} on {own['num_images']} samples of data {own['dataset'][:12]}")
    else:
        fixed = json.loads(fixed)
    measure = Yardstick.of_dict(fixed)
    problem = measure.mismatch(tuple(own["image_shape"]), tuple(own["class_names"]))
    if problem is not None:
        return (f"v{version.version}'s data {problem} (the yardstick of {name}, fixed by v{fixed['version']}): it cannot be compared with "
                f"{name}'s versions; register it under another registry.model_name, or make it champion with "
                f"`gan-pipeline promote {name} {version.version}`")
    if measure.key == own["key"]:
        scores = {"fid": report["model"]["fid"], "fid_std": report["model"]["fid_bootstrap_std"]}
    else:
        scores = _on(client, cfg, name, version, fixed, G, latent)
    if isinstance(scores, str):
        print(f"[register] {name} v{version.version} not measured on {name}'s yardstick: {scores}")
        client.set_model_version_tag(name, version.version, "yardstick_fid", f"n/a: {scores}"[:4000])
        return None
    client.set_model_version_tag(name, version.version, "yardstick_fid", str(scores["fid"]))
    client.set_model_version_tag(name, version.version, "yardstick_fid_std", str(scores["fid_std"]))
    return None


def _on(client, cfg: PipelineConfig, name: str, version, fixed: dict, G: torch.nn.Module, latent: Latent) -> dict | str:  # noqa: ANN001
    """This version's scores on the model's yardstick, downloaded once from the run that fixed it; or why not."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        bundle = download_once(cfg, fixed["bundle"], Workspace.of(cfg.runtime.workdir).root / "yardsticks" / fixed["key"])
        instrument = Instrument.load(bundle, cfg.eval.inception_weights)
    except (MlflowException, OSError) as err:
        if absent(err):
            return f"the yardstick {fixed['bundle']} is no longer in the registry"
        raise
    except ValueError as err:  # an Inception yardstick without its weights file here
        return str(err)
    return measured_again(client, cfg, name, version, instrument, G, latent)


def fix(client, name: str, version, report: dict) -> dict:  # noqa: ANN001
    """Make this version's yardstick (its report's, its run's yardstick.pt) the model's."""
    fixed = {**report["yardstick"], "version": str(version.version), "bundle": f"runs:/{version.run_id}/evaluation/{BUNDLE}",
             "floor_fid": report["real_vs_real"]["fid"]}
    client.set_registered_model_tag(name, YARDSTICK_TAG, json.dumps(fixed))
    return fixed


def follow_champion(client, name: str, version) -> str:  # noqa: ANN001
    """After a person moved `champion`: when its data cannot be measured on the model's yardstick (the gate refused it for
    that), its own yardstick becomes the model's, so that the versions after it are compared with it. Says so, or ''."""
    import mlflow  # noqa: PLC0415
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    fixed = client.get_registered_model(name).tags.get(YARDSTICK_TAG)
    if fixed is None or not version.run_id:
        return ""
    try:
        report = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/evaluation/report.json")
    except MlflowException as err:
        if absent(err):
            return ""
        raise
    own = report.get("yardstick")
    if own is None or Yardstick.of_dict(json.loads(fixed)).mismatch(tuple(own["image_shape"]), tuple(own["class_names"])) is None:
        return ""
    fix(client, name, version, report)
    return f"; {name}'s yardstick is now v{version.version}'s (its data cannot be measured on the one before)"


def registered_generator(name: str, version: str) -> tuple[torch.nn.Module, Latent, tuple[int, ...]]:
    """A registered version's generator as the registry keeps it (its model's generator.pt, downloaded), in eval mode,
    with its latent layout and image shape."""
    import mlflow  # noqa: PLC0415
    from mlflow.models import Model  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp))
        weights = Model.load(folder).flavors["python_function"]["artifacts"]["generator"]["path"]
        blob = load_tensors(folder / weights, f"models:/{name}/{version}'s {weights}", "a generator this project registered")
    G, _, latent = ckpt.generator_of(blob)
    return G, latent, tuple(blob["image_shape"])
