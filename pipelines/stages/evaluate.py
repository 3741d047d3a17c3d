"""Stage 3: score the EMA generator against the real data, beside the real-vs-real floor."""

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from prefect import task

from gan import checkpoint as ckpt, data, sampling, watchdog
from gan.config import ConfigError, unreadable
from gan.images import class_rows, save_class_histograms, save_curves, save_grid
from gan.latent import Latent
from gan.metrics import fid
from gan.metrics.classes import code_agreement, label_accuracy
from gan.metrics.classifier import Classifier, embed, to_float
from gan.metrics.extractors import Extractor, inception_key
from gan.metrics.memorisation import Memorisation, find_memorisation
from pipelines import console
from pipelines.cluster.embed import embed_images
from pipelines.config import PipelineConfig, cache_key, fingerprint
from pipelines.errors import retry_unless_user_error
from pipelines.faults import maybe_fail, maybe_kill
from pipelines.provenance import stage_code
from pipelines.workspace import Workspace
from pipelines.yardstick import (
    BUNDLE, Instrument, Yardstick, class_mix, feature_classifier, feature_extractor, feature_extractor_key, label_shares, reference_of,
)


REPORT = "report.json"


def eval_key(cfg: PipelineConfig) -> str:
    """The evaluation settings, with the Inception weights named by their file's bytes instead of its path: a weights
    file replaced in place is another network, and its evaluation must not be answered from cache."""
    weights = cfg.eval.inception_weights
    network = inception_key(Path(weights).expanduser()) if weights is not None and not unreadable(weights) else None
    return fingerprint(cfg.eval.model_dump(mode="json", exclude={"inception_weights"}), network)


def check_sample_count(n: int, extractor: Extractor, cfg: PipelineConfig, heldout: int) -> None:
    """FID needs more samples than the extractor's feature dimensions: fail before any embedding, naming the settings."""
    try:
        fid.check_sample_count(n, extractor.feature_dim)
    except ValueError as err:
        raise ConfigError(
            f"config error: eval.feature_extractor {extractor.name!r} with eval.num_samples = {cfg.eval.num_samples} and "
            f"{heldout} held-out images: {err}"
        ) from None


def write_pictures(
    folder: Path, fake: torch.Tensor, real: np.ndarray, assigned: np.ndarray, num_classes: int, state: dict, histograms: dict[str, list[float]],
) -> None:
    """Sample grids of generated and real images, one row per assigned class, the class histograms and the training curves."""
    save_grid(fake[:64], folder / "samples.png")
    save_grid(real[:64], folder / "real.png")
    # One row per class, as the classifier assigns them: random picks, not the most confident ones.
    save_grid(class_rows(fake, assigned, num_classes, seed=0), folder / "samples_by_class.png")
    save_class_histograms(histograms, folder / "class_histograms.png")
    history = ckpt.history_of(state)
    if history:
        save_curves(history, folder / "curves.png", ckpt.snapshots_of(state))


def conditional_scores(G: torch.nn.Module, latent: Latent, classifier: Classifier, folder: Path, seed: int) -> dict:
    """Conditional models: how often the classifier agrees with the label asked for, per class; one row per label."""
    inputs = sampling.per_class_inputs(latent, 100, seed)
    images = inputs.generate(G, latent)
    accuracy = label_accuracy(embed(classifier, images)[1], inputs.label, latent.num_classes)
    save_grid(images.view(latent.num_classes, 100, *images.shape[1:])[:, :10].flatten(0, 1), folder / "samples_by_label.png", nrow=10)
    return {"per_class_accuracy": [round(a, 4) for a in accuracy], "min_accuracy": min(accuracy), "mean_accuracy": float(np.mean(accuracy))}


def infogan_scores(G: torch.nn.Module, latent: Latent, codes: np.ndarray, predicted: np.ndarray, num_classes: int, folder: Path, seed: int) -> dict:
    """InfoGAN: agreement of the categorical code with the classifier's digit under the best one-to-one mapping;
    the classic figure (rows: categorical code, columns: first continuous code from -2 to 2)."""
    agreement, mapping = code_agreement(codes, predicted, latent.info_categorical, num_classes)
    if latent.info_continuous:
        save_grid(sampling.code_sweep_inputs(latent, 10, seed).generate(G, latent), folder / "infogan_codes.png", nrow=10)
    else:
        save_grid(sampling.per_class_inputs(latent, 10, seed).generate(G, latent), folder / "infogan_codes.png", nrow=10)
    return {"code_class_agreement": agreement, "code_to_class": mapping}


def fids_of_draws(
    G: torch.nn.Module, latent: Latent, instrument: Instrument, cfg: PipelineConfig, on_draw: Callable[[int], None] | None = None,
) -> list[float]:
    """The FID on `eval.fid_draws` further draws of the yardstick's sample count (seeds seed+1, ...): with 1000 samples
    one draw moves by about a tenth either way, which a single number hides."""
    fids = []
    for k in range(1, cfg.eval.fid_draws + 1):
        feats, _ = embed_images(instrument.extractor, instrument.draw(G, latent, cfg.eval.seed + k)[1], cfg.eval.ray_embed_min_images)
        fids.append(instrument.reference.fid(feats))
        if on_draw is not None:
            on_draw(k)
    return fids


def evaluate(cfg: PipelineConfig, dataset_dir: str, checkpoint_dir: str) -> str:
    """Write report.json and sample grids for a checkpoint; return the report's path."""
    maybe_fail("evaluate", kill_here=False)
    dataset_dir, workspace = Path(dataset_dir), Workspace.of(cfg.runtime.workdir)
    # Named by what it measures: the checkpoint, the data it is measured against, the settings and the code.
    data_fingerprint = data.read_manifest(dataset_dir)["fingerprint"]
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
    manifest = data.read_manifest(dataset_dir)
    classifier, accuracy = feature_classifier(cfg, dataset_dir, manifest)
    classifier_key = feature_extractor_key(cfg, manifest)
    extractor = feature_extractor(cfg, classifier, classifier_key)
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
                        len(reference.feats), stage_code("evaluate"))
    instrument = Instrument(measure, extractor, classifier, reference, class_mix(manifest))  # conditional labels drawn in the data's mix
    bar.update(2, note="training images embedded")

    state = ckpt.load(checkpoint_dir)
    G, _, latent = ckpt.ema_generator(state)
    inputs, fake_images = instrument.draw(G, latent)  # [n, C, H, W] in [0, 1]
    real_images, _ = data.load_split(dataset_dir, "heldout", np.random.default_rng(cfg.eval.seed).choice(heldout, n, replace=False))
    fake, real = (instrument.embed(images, cfg.eval.ray_embed_min_images) for images in (fake_images, real_images))
    model_scores, floor_scores = (instrument.score(embedded, cfg.eval.coverage_min_fraction) for embedded in (fake, real))
    # Memorisation: generated images' nearest training image, against held-out reals': in pixels among every training
    # image (read from disk a record batch at a time; uint8 read in [0, 1], like the samples), in features among the sample's.
    pixels = find_memorisation(lambda: (images for images, _ in data.iter_split(dataset_dir, "train")), fake_images, real_images)
    features = find_memorisation(reference.feats, fake.feats, real.feats)

    bar.update(3, note="samples scored")
    draws = [model_scores.fid] + fids_of_draws(G, latent, instrument, cfg, lambda k: bar.update(3 + k, note=f"draw {k}"))
    changes = data_change(cfg, manifest, dataset_dir, instrument, classifier_key)
    report = {
        "fid_draws": {"mean": float(np.mean(draws)), "std": float(np.std(draws)), "values": draws},
        "checkpoint": str(checkpoint_dir), "step": int(state["step"]), "epoch": int(state["epoch"]),
        "train_seconds": float(state["train_seconds"]), "num_images": n, "dataset_fingerprint": manifest["fingerprint"],
        "feature_extractor": extractor.key, "feature_network": extractor.name, "yardstick": measure.as_dict(),
        "classifier_test_accuracy": accuracy,
        "model": model_scores.__dict__, "real_vs_real": floor_scores.__dict__,
        "reference_class_histogram": [round(float(h), 4) for h in reference.hist],
        # Quick FIDs are measured with the classifier: those of this classifier only (a cached training run may predate a change).
        "quick_fid": [q for q in ckpt.snapshots_of(state) if q.get("yardstick") == classifier_key],
        "memorisation": {space: memorisation_summary(m) for space, m in (("pixels", pixels), ("features", features))},
        "collapsed": watchdog.class_collapse(model_scores.effective_classes, floor_scores.effective_classes, cfg.eval.collapse_ratio),
        **({"data_change": changes} if changes else {}),
    }
    data.remove_stale_temporaries(out.parent)
    if out.exists():  # a folder without its report was not published by this code: replace it
        shutil.rmtree(out)
    with data.written_aside(out) as tmp:  # the report and its pictures appear together
        histograms = {"training images": report["reference_class_histogram"], "held-out real": floor_scores.class_histogram,
                      "generated": model_scores.class_histogram}
        write_pictures(tmp, fake_images, real_images, fake.classes.argmax(1), manifest["num_classes"], state, histograms)
        # The closest generated/training pairs in pixels: generated images on top, their nearest training image below.
        closest = torch.as_tensor(pixels.closest)
        pairs = torch.cat([fake_images[closest[:, 0]], to_float(data.load_split(dataset_dir, "train", closest[:, 1].numpy())[0])])
        save_grid(pairs, tmp / "nearest_train.png", nrow=len(closest))
        if latent.num_classes:
            report["conditional"] = conditional_scores(G, latent, classifier, tmp, cfg.eval.seed)
        if latent.info_categorical:
            report["infogan"] = infogan_scores(G, latent, inputs.code, fake.classes.argmax(1), manifest["num_classes"], tmp, cfg.eval.seed)
        if changes and "class_mix" in changes:
            mixes = changes["class_mix"]
            save_class_histograms({f"training images before ({changes['parent'][:8]})": list(mixes["before"].values()),
                                   f"after ({manifest['fingerprint'][:8]})": list(mixes["after"].values())},
                                  tmp / "data_change.png", xlabel="class (by label)", ticks=list(mixes["after"]))
        instrument.save(tmp / BUNDLE)
        report["seconds"] = round(time.time() - started, 2)
        maybe_kill("evaluate", cfg.runtime.workdir, "with its pictures written aside and its report not yet published")
        (tmp / REPORT).write_text(json.dumps(report, indent=2))
    print(
        f"[evaluate] {extractor.name} features: FID {model_scores.fid:.2f} ± {model_scores.fid_bootstrap_std:.2f} "
        f"(floor {floor_scores.fid:.2f} ± "
        f"{floor_scores.fid_bootstrap_std:.2f}; over {len(draws)} draws {np.mean(draws):.2f} ± {np.std(draws):.2f}), "
        f"KID {model_scores.kid:.4f} ± {model_scores.kid_std:.4f} (floor {floor_scores.kid:.4f}), "
        f"precision {model_scores.precision:.2f} recall {model_scores.recall:.2f} (floor {floor_scores.precision:.2f}, "
        f"{floor_scores.recall:.2f}), density {model_scores.density:.2f} coverage {model_scores.coverage:.2f}, "
        f"memorised {pixels.share:.1%} in pixels, {features.share:.1%} in features, "
        f"IS {model_scores.inception_score:.2f} (floor {floor_scores.inception_score:.2f}), "
        f"classes {model_scores.classes_covered}/{manifest['num_classes']} (effective {model_scores.effective_classes:.2f}, "
        f"floor {floor_scores.effective_classes:.2f}), class KL {model_scores.class_kl:.3f}, "
        f"classifier accuracy {accuracy:.3f}"
        + (f"; label accuracy min {report['conditional']['min_accuracy']:.3f}" if "conditional" in report else "")
        + (f"; code-class agreement {report['infogan']['code_class_agreement']:.3f}" if "infogan" in report else "")
        + (f"; {report['collapsed']}" if report["collapsed"] else "")
    )
    if changes:
        print(f"[evaluate] {changes['summary']}")


def fid_line(report: dict) -> str:
    """The report's headline: the model's FID and bootstrap spread beside the real-vs-real floor's."""
    model, floor = report["model"], report["real_vs_real"]
    return (f"FID {model['fid']:.2f} ± {model['fid_bootstrap_std']:.2f} (floor {floor['fid']:.2f} ± {floor['fid_bootstrap_std']:.2f}; "
            f"{report['num_images']} samples, step {report['step']})" + (f"; {report['collapsed']}" if report.get("collapsed") else ""))


def memorisation_summary(m: Memorisation) -> dict:
    """The share of generated images closer to a training image than all but the closest 5 % of held-out reals are."""
    return {
        "memorised_share": m.share, "threshold": m.threshold,
        "nearest_train_median": float(np.median(m.fake_distances)), "heldout_nearest_train_median": float(np.median(m.heldout_distances)),
    }


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
    if not data.is_complete(folder):
        section["missing"] = f"the parent dataset {folder} is no longer in this working folder"
        return {**section, "summary": change_line(section)}
    before = data.read_manifest(folder)
    names = list(dict.fromkeys(before["class_names"] + manifest["class_names"]))  # the union, in order of first appearance
    section["class_mix"] = {when: {name: round(share, 4) for name, share in zip(names, label_shares(m, names))}
                            for when, m in (("before", before), ("after", manifest))}
    section["pixels"] = {"before": data.pixel_stats(folder, "train"), "after": data.pixel_stats(dataset_dir, "train")}
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
    data_fingerprint = data.read_manifest(Path(parameters["dataset_dir"]))["fingerprint"]
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
    """The report as a markdown table (model beside the real-vs-real floor) with links to its pictures."""
    report = json.loads(report_path.read_text())
    model, floor = report["model"], report["real_vs_real"]
    rows = [
        ("FID", f"{model['fid']:.2f} ± {model['fid_bootstrap_std']:.2f}", f"{floor['fid']:.2f} ± {floor['fid_bootstrap_std']:.2f}"),
        ("KID", f"{model['kid']:.4f} ± {model['kid_std']:.4f}", f"{floor['kid']:.4f} ± {floor['kid_std']:.4f}"),
        ("precision / recall", f"{model['precision']:.2f} / {model['recall']:.2f}", f"{floor['precision']:.2f} / {floor['recall']:.2f}"),
        ("density / coverage", f"{model['density']:.2f} / {model['coverage']:.2f}", f"{floor['density']:.2f} / {floor['coverage']:.2f}"),
        ("Inception Score", f"{model['inception_score']:.2f}", f"{floor['inception_score']:.2f}"),
        ("classes (effective)", f"{model['classes_covered']} ({model['effective_classes']:.2f})", f"{floor['classes_covered']} ({floor['effective_classes']:.2f})"),
        ("memorised (pixels / features)", f"{report['memorisation']['pixels']['memorised_share']:.1%} / "
         f"{report['memorisation']['features']['memorised_share']:.1%}", "–"),
    ]
    pictures = sorted(p.name for p in report_path.parent.glob("*.png"))
    return "\n".join([
        f"### Evaluation of `{report['checkpoint']}`", "",
        f"{report['num_images']} samples against the held-out floor at the same count; features: {report['feature_network']} "
        f"`{report['feature_extractor']}`"
        + (f"; **{report['collapsed']}**" if report.get("collapsed") else ""), "",
        "| metric | model | real vs real (floor) |", "|---|---:|---:|", *(f"| {a} | {b} | {c} |" for a, b, c in rows), "",
        *([f"**Data**: {report['data_change']['summary']}", ""] if "data_change" in report else []),
        "Pictures: " + ", ".join(f"[{name}]({(report_path.parent / name).as_uri()})" for name in pictures),
    ])
