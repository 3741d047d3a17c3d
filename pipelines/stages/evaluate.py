"""Stage 3: score the EMA generator against the real data, beside the real-vs-real floor.

The protocol is the library's (gan/metrics/evaluation.py); this stage brings it the cached feature classifier, extractor
(as `gan.config.chosen_extractor` picks it for the data) and reference, names and caches the report, draws its pictures and publishes it (a Prefect artifact)."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from prefect import task

from gan import checkpoint as ckpt, files, sampling
from gan.config import ConfigError, chosen_extractor, unreadable
from gan.batches import half_mirrored
from gan.data.manifest import is_complete, read_manifest
from gan.data.reader import iter_split, load_split, pixel_stats
from gan.images import class_rows, save_class_histograms, save_curves, save_grid
from gan.latent import Latent
from gan.metrics import evaluation
from gan.metrics.classifier import to_float
from gan.metrics.extractors import Extractor, inception_key
from gan.metrics.fid import check_sample_count as check_fid_samples
from pipelines import console
from pipelines.config import PipelineConfig, cache_key, fingerprint, mirror_tag
from pipelines.errors import retry_unless_user_error
from pipelines.faults import maybe_fail, maybe_kill
from pipelines.provenance import stage_code
from pipelines.stages import Step
from pipelines.workspace import Workspace
from pipelines.yardstick import (
    BUNDLE, Instrument, Yardstick, class_mix, embedder, feature_classifier, feature_extractor, feature_extractor_key, label_shares,
    quick_fid_extractor, reference_of,
)


REPORT = "report.json"


def eval_key(cfg: PipelineConfig) -> str:
    """The evaluation settings, with the Inception weights named by their file's bytes instead of its path (a weights
    file replaced in place is another network, and its evaluation must not be answered from cache), and data.mirror,
    which the reference and the floor follow."""
    weights = cfg.eval.inception_weights
    network = inception_key(Path(weights).expanduser()) if weights is not None and not unreadable(weights) else None
    return fingerprint(cfg.eval.model_dump(mode="json", exclude={"inception_weights"}), network, *mirror_tag(cfg))


def check_sample_count(n: int, extractor: Extractor, cfg: PipelineConfig, heldout: int) -> None:
    """FID needs more samples than the extractor's feature dimensions: fail before any embedding, naming the settings."""
    try:
        check_fid_samples(n, extractor.feature_dim)
    except ValueError as err:
        raise ConfigError(
            f"config error: eval.feature_extractor {extractor.name!r} with eval.num_samples = {cfg.eval.num_samples} and "
            f"{heldout} held-out images: {err}"
        ) from None


def write_pictures(folder: Path, result: evaluation.Evaluation, dataset_dir: Path, num_classes: int, state: dict, report: dict) -> None:
    """Sample grids of generated and real images, one row per assigned class, the class histograms, the closest
    generated/training pairs, one row per label (conditional models) and the training curves."""
    save_grid(result.fake[:64], folder / "samples.png")
    save_grid(result.real[:64], folder / "real.png")
    # One row per class, as the classifier assigns them: random picks, not the most confident ones.
    save_grid(class_rows(result.fake, result.assigned, num_classes, seed=0), folder / "samples_by_class.png")
    save_class_histograms({"training images": report["reference_class_histogram"], "held-out real": report["real_vs_real"]["class_histogram"],
                           "generated": report["model"]["class_histogram"]}, folder / "class_histograms.png")
    # The closest generated/training pairs in pixels: generated images on top, their nearest training image below.
    closest = torch.as_tensor(result.closest)
    pairs = torch.cat([result.fake[closest[:, 0]], to_float(load_split(dataset_dir, "train", closest[:, 1].numpy())[0])])
    save_grid(pairs, folder / "nearest_train.png", nrow=len(closest))
    if result.by_label is not None:
        save_grid(result.by_label[:, :10].flatten(0, 1), folder / "samples_by_label.png", nrow=10)
    history = ckpt.history_of(state)
    if history:
        save_curves(history, folder / "curves.png", ckpt.snapshots_of(state))


def infogan_figure(G: torch.nn.Module, latent: Latent, folder: Path, seed: int) -> None:
    """InfoGAN's classic figure: rows the categorical code, columns the first continuous code from -2 to 2 (or random
    noise per code when the model has no continuous code)."""
    inputs = sampling.code_sweep_inputs(latent, 10, seed) if latent.info_continuous else sampling.per_class_inputs(latent, 10, seed)
    save_grid(inputs.generate(G, latent), folder / "infogan_codes.png", nrow=10)


def evaluate(cfg: PipelineConfig, dataset_dir: str, checkpoint_dir: str) -> str:
    """Write report.json and sample grids for a checkpoint; return the report's path."""
    maybe_fail("evaluate", kill_here=False)
    dataset_dir, workspace = Path(dataset_dir), Workspace.of(cfg.runtime.workdir)
    # Named by what it measures: the checkpoint, the data it is measured against, the settings and the code.
    data_fingerprint = read_manifest(dataset_dir)["fingerprint"]
    out = workspace.evaluations / fingerprint(str(checkpoint_dir), data_fingerprint, eval_key(cfg), stage_code("evaluate"))
    if (out / REPORT).is_file():
        print(f"[evaluate] report already complete: {out / REPORT}")
        return str(out / REPORT)
    with console.steps("evaluate", 4 + cfg.eval.fid_draws) as bar:
        write_report(cfg, dataset_dir, Path(checkpoint_dir), out, bar)
    return str(out / REPORT)


def write_report(cfg: PipelineConfig, dataset_dir: Path, checkpoint_dir: Path, out: Path, bar: console.Bar) -> None:
    """Score the checkpoint's EMA generator against the dataset; write the report and its pictures into `out` at once."""
    started = time.time()
    state = ckpt.load(checkpoint_dir)  # first: a file that is no checkpoint of ours is refused before any work
    manifest = read_manifest(dataset_dir)
    name, reason = chosen_extractor(cfg.eval, manifest["num_classes"])
    print(f"[evaluate] feature network: {name} ({reason})")
    classifier, accuracy = feature_classifier(cfg, dataset_dir, manifest)
    classifier_key = feature_extractor_key(cfg, manifest)
    extractor = feature_extractor(cfg, dataset_dir, manifest, classifier, name)
    heldout = manifest["rows"]["heldout"]
    # Same number of images on both sides, so the model's FID and the floor share the small-sample bias.
    n = min(cfg.eval.num_samples, heldout)
    check_sample_count(n, extractor, cfg, heldout)
    bar.update(1, note=f"feature classifier and {extractor.name} features ready")

    # The yardstick: the training images' features and class histogram (what the GAN learnt from), embedded once per
    # extractor and dataset, and summarised once for the model, the floor and every draw; kept beside the report, so
    # that other generators (a champion trained on other data) can be measured on it too.
    reference = reference_of(cfg, extractor, classifier, classifier_key, manifest, dataset_dir)
    measure = Yardstick(extractor.key, manifest["fingerprint"], n, cfg.eval.seed, tuple(manifest["image_shape"]), tuple(manifest["class_names"]),
                        len(reference.feats), stage_code("evaluate"), cfg.data.mirror)
    instrument = Instrument(measure, extractor, classifier, reference, class_mix(manifest))  # conditional labels drawn in the data's mix
    bar.update(2, note="training images embedded")

    G, _, latent = ckpt.ema_generator(state)
    real_images, _ = load_split(dataset_dir, "heldout", np.random.default_rng(cfg.eval.seed).choice(heldout, n, replace=False))
    if cfg.data.mirror:  # the floor: held-out images from the distribution the run trained on
        real_images = half_mirrored(real_images)
    steps = iter(range(3, 4 + cfg.eval.fid_draws))
    result = evaluation.evaluate(
        G, latent, real_images, lambda: (images for images, _ in iter_split(dataset_dir, "train")), extractor, classifier, reference,
        instrument.class_mix, cfg.eval, embed=embedder(cfg.eval.ray_embed_min_images), progress=lambda note: bar.update(next(steps), note=note),
    )
    changes = data_change(cfg, manifest, dataset_dir, instrument, classifier_key)
    report = {
        "checkpoint": str(checkpoint_dir), "step": int(state["step"]), "epoch": int(state["epoch"]),
        "train_seconds": float(state["train_seconds"]), "dataset_fingerprint": manifest["fingerprint"], "yardstick": measure.as_dict(),
        "classifier_test_accuracy": accuracy, **result.report,
        # Quick FIDs are measured with this evaluation's network (the classifier in place of Inception): those of this very
        # network only (a cached training run may predate a change).
        "quick_fid": [q for q in ckpt.snapshots_of(state) if q.get("yardstick") == quick_fid_extractor(cfg, manifest)[1]],
        **({"data_change": changes} if changes else {}),
    }
    files.remove_stale_temporaries(out.parent)
    if out.exists():  # a folder without its report was not published by this code: replace it
        shutil.rmtree(out)
    with files.written_aside(out) as tmp:  # the report and its pictures appear together
        write_pictures(tmp, result, dataset_dir, manifest["num_classes"], state, report)
        if latent.info_categorical:
            infogan_figure(G, latent, tmp, cfg.eval.seed)
        if changes and "class_mix" in changes:
            mixes = changes["class_mix"]
            save_class_histograms({f"training images before ({changes['parent'][:8]})": list(mixes["before"].values()),
                                   f"after ({manifest['fingerprint'][:8]})": list(mixes["after"].values())},
                                  tmp / "data_change.png", xlabel="class (by label)", ticks=list(mixes["after"]))
        instrument.save(tmp / BUNDLE)
        report["seconds"] = round(time.time() - started, 2)
        maybe_kill("evaluate", cfg.runtime.workdir, "with its pictures written aside and its report not yet published")
        (tmp / REPORT).write_text(json.dumps(report, indent=2))
    print(f"[evaluate] {extractor.name} features: {evaluation.summary_line(report)}; classifier accuracy {accuracy:.3f}"
          + (f"; {report['collapsed']}" if report["collapsed"] else ""))
    if changes:
        print(f"[evaluate] {changes['summary']}")


def data_change(cfg: PipelineConfig, manifest: dict, dataset_dir: Path, instrument: Instrument, classifier_key: str) -> dict | None:
    """What changed since the dataset's parent version (the one before it from the same source and settings): input
    files added, changed and removed, rows, the class mix and the pixels' mean and std before and after, and the FID
    between the old and the new training images on this evaluation's yardstick. None for a dataset without a parent."""
    parent = manifest.get("parent")
    if not parent:
        return None
    section = {"parent": parent["fingerprint"], "files": manifest.get("changes", {}), "first_files": manifest.get("changes_first", {}),
               "rows": {"before": parent["rows"], "after": manifest["rows"]}}
    folder = Workspace.of(cfg.runtime.workdir).datasets / parent["folder"]
    if not is_complete(folder):
        section["missing"] = f"the parent dataset {folder} is no longer in this working folder"
        return {**section, "summary": change_line(section)}
    before = read_manifest(folder)
    names = list(dict.fromkeys(before["class_names"] + manifest["class_names"]))  # the union, in order of first appearance
    section["class_mix"] = {when: {name: round(share, 4) for name, share in zip(names, label_shares(m, names))}
                            for when, m in (("before", before), ("after", manifest))}
    section["pixels"] = {"before": pixel_stats(folder, "train"), "after": pixel_stats(dataset_dir, "train")}
    if tuple(before["image_shape"]) == instrument.yardstick.image_shape:
        old = reference_of(cfg, instrument.extractor, instrument.classifier, classifier_key, before, folder)
        section["fid"] = instrument.reference.fid(old.feats)
    return {**section, "summary": change_line(section)}


def change_line(changes: dict) -> str:
    """The data-change section in one line: files, rows, pixels and the old-vs-new FID."""
    files = changes["files"]
    line = (f"data changed since {changes['parent'][:12]}: {files.get('added', 0)} file(s) added, {files.get('changed', 0)} changed, "
            f"{files.get('removed', 0)} removed; training rows {changes['rows']['before']['train']} -> {changes['rows']['after']['train']}")
    if "missing" in changes:
        return f"{line}; {changes['missing']}"
    pixels = changes["pixels"]
    mean = "/".join(f"{m:.3f}" for m in pixels["before"]["mean"]), "/".join(f"{m:.3f}" for m in pixels["after"]["mean"])
    line += f"; pixel mean {mean[0]} -> {mean[1]}"
    return line + (f"; FID old vs new training images {changes['fid']:.2f}" if "fid" in changes else "")


def _key(context, parameters: dict) -> str:  # noqa: ANN001
    cfg: PipelineConfig = parameters["cfg"]
    workdir = Workspace.of(cfg.runtime.workdir).root
    data_fingerprint = read_manifest(Path(parameters["dataset_dir"]))["fingerprint"]
    return cache_key("evaluate", parameters["checkpoint_dir"], data_fingerprint, eval_key(cfg), workdir, stage_code("evaluate"))


@task(name="evaluate", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error,
      cache_key_fn=_key, persist_result=True, result_serializer="json")
def evaluate_task(cfg: PipelineConfig, dataset_dir: str, checkpoint_dir: str) -> str:
    """Checkpoint -> evaluation report (cached on the checkpoint, eval config and evaluation code), also a Prefect artifact."""
    from prefect.artifacts import create_markdown_artifact  # noqa: PLC0415

    report_path = evaluate(cfg, dataset_dir, checkpoint_dir)
    create_markdown_artifact(key="evaluation", markdown=report_markdown(Path(report_path)), description="scores of the model and the floor")
    return report_path


def report_markdown(report_path: Path) -> str:
    """The report as a markdown table (each of its metrics, the model's beside the real-vs-real floor's) with links to its pictures."""
    report = json.loads(report_path.read_text())

    def cell(line: dict, value: str, std: str) -> str:
        return "–" if line[value] is None else evaluation.figure(line[value], line[std], line["format"])

    pictures = sorted(p.name for p in report_path.parent.glob("*.png"))
    return "\n".join([
        f"### Evaluation of `{report['checkpoint']}`", "",
        f"{report['num_images']} samples against the held-out floor at the same count; features: {report['feature_network']} "
        f"`{report['feature_extractor']}`"
        + (f"; **{report['collapsed']}**" if report.get("collapsed") else ""), "",
        "| metric | model | real vs real (floor) |", "|---|---:|---:|",
        *(f"| {line['label']} | {cell(line, 'value', 'std')} | {cell(line, 'floor', 'floor_std')} |" for line in report["metrics"]), "",
        *([f"**Data**: {report['data_change']['summary']}", ""] if "data_change" in report else []),
        "Pictures: " + ", ".join(f"[{name}]({(report_path.parent / name).as_uri()})" for name in pictures),
    ])


STEPS = (Step("report", evaluate_task, lambda cfg, run: (cfg, run["dataset"], run["train"]["checkpoint"]), lambda path: Path(path).is_file()),)
