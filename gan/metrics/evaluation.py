"""The evaluation protocol (as stylegan2-ada's metrics/metric_main.py): one generator's report against the training images.

The generator's samples and as many held-out real images (the floor: what a perfect generator would score, with the
same small-sample bias) are embedded alike and scored by every metric named in REPORTED, each run through the registry
(`METRICS`); FID again on further draws of latents; memorisation in pixels and in features; label accuracy for
conditional models and code agreement for InfoGAN. The report lists what it measured in order (`report["metrics"]`),
and every summary line is made from that list. The caller brings the data, the networks and the reference (the
pipeline caches them) and may embed elsewhere (the pipeline's Ray tasks) by passing its own `embed`.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gan import sampling, watchdog
from gan.config import EvalConfig
from gan.latent import Latent
from gan.metrics import classes, density_coverage, fid, inception_score, kid, memorisation, precision_recall  # noqa: F401  (fill METRICS)
from gan.metrics.classes import code_agreement, label_accuracy
from gan.metrics.classifier import Classifier
from gan.metrics.classifier import embed as classify
from gan.metrics.extractors import Extractor
from gan.metrics.fid import frechet_distance_from_stats, gaussian_stats
from gan.metrics.memorisation import find_memorisation, summary
from gan.metrics.registry import Context, entry
from gan.sampling import Inputs

# The metrics of every report, in the order it lists them: a registered metric named here is in every report.
REPORTED = ("fid", "kid", "precision_recall", "density_coverage", "inception_score", "classes")
BY_LABEL = 100  # conditional models: samples per label behind the label accuracy

Images = np.ndarray | torch.Tensor  # [N, C, H, W]: uint8, or floats in [0, 1]
Embed = Callable[[Extractor, Images], tuple[np.ndarray, np.ndarray]]  # -> (features [N, D], softmax [N, K']), float64
Blocks = Callable[[], Iterable[np.ndarray]]  # the training images block by block, in the same order each call


def in_process(extractor: Extractor, images: Images) -> tuple[np.ndarray, np.ndarray]:
    """The default `Embed`: the extractor in this process."""
    return extractor.embed(images)


@dataclass(frozen=True)
class Reference:
    """The training images as the scores read them, summarised once: the mean and covariance (a [D, D] product over
    all R rows) and the KID scale serve the model, the floor and every latent draw alike."""

    feats: np.ndarray  # [R, D] features: KID, and a seeded subset of them for the k-NN metrics
    hist: np.ndarray  # [K] class histogram: the class KL
    mu: np.ndarray  # [D] mean of feats: FID
    cov: np.ndarray  # [D, D] covariance of feats: FID
    kid_scale: float  # KID divides both sets' features by it: feats' root mean square, or 1 (kid.kid)

    @classmethod
    def of(cls, feats: np.ndarray, hist: np.ndarray, kid_rescale: bool = True) -> "Reference":
        """The reference of features [R, D] and class histogram [K]; `kid_rescale` as the extractor's."""
        scale = float(np.sqrt((feats.astype(np.float64) ** 2).mean())) if kid_rescale else 1.0
        return cls(feats, hist, *gaussian_stats(feats), scale)

    @property
    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, covariance): what FID reads of the reference."""
        return self.mu, self.cov

    def fid(self, feats: np.ndarray) -> float:
        """FID of features [N, D] against the reference: the same number as frechet_distance(feats, self.feats)."""
        return frechet_distance_from_stats(*gaussian_stats(feats), self.mu, self.cov)


@dataclass(frozen=True)
class Embedded:
    """One image set as the metrics read it."""

    feats: np.ndarray  # [N, D] the extractor's features: FID, KID, the k-NN metrics, feature memorisation
    probs: np.ndarray  # [N, K'] the extractor's softmax (the domain classifier's for a head-less extractor): the Inception Score
    classes: np.ndarray  # [N, K] the domain classifier's probabilities: class coverage, collapse, InfoGAN agreement


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: its report (JSON-ready) and the images its pictures show."""

    report: dict
    fake: torch.Tensor  # [n, C, H, W] in [0, 1]: the scored samples
    real: Images  # [n, C, H, W]: the held-out images of the floor
    assigned: np.ndarray  # [n] each sample's class, as the domain classifier sees it
    closest: np.ndarray  # [top, 2] (sample, training image) of the closest pairs in pixels, closest first
    by_label: torch.Tensor | None  # conditional models: [K, BY_LABEL, C, H, W], the samples behind the label accuracy


def draw(G: nn.Module, latent: Latent, n: int, seed: int, class_mix: np.ndarray) -> tuple[Inputs, torch.Tensor]:
    """n samples of G ([n, C, H, W] in [0, 1]) from seeded latents; conditional models draw their labels in `class_mix`."""
    inputs = sampling.random_inputs(latent, n, seed, class_probs=class_mix)
    return inputs, inputs.generate(G, latent)


def embed_set(extractor: Extractor, classifier: Classifier, images: Images, embed: Embed = in_process) -> Embedded:
    """An image set through the extractor (by `embed`) and, for the class metrics, the domain classifier. An extractor
    without a softmax (the self-supervised encoder) leaves the Inception Score to the domain classifier's."""
    feats, probs = embed(extractor, images)
    classes = probs if extractor.network is classifier else classify(classifier, images)[1]
    return Embedded(feats, probs if probs.shape[1] else classes, classes)


def score(sample: Embedded, reference: Reference, seed: int, min_fraction: float, metrics: Sequence[str] = REPORTED) -> dict:
    """Every metric of `metrics`, in order, of one embedded image set against the reference, each handed what its
    registry entry reads of the two. FID and KID read the whole reference, the k-NN metrics a seeded subset of N rows."""
    context, scores = Context(seed, min_fraction, reference.kid_scale), {}
    for name in metrics:
        metric = entry(name)
        assert metric.reads is not None, f"metric {name!r} does not score one image set (checked by `check_metrics`)"
        of_reference, of_sample = metric.reads
        real = None if of_reference is None else getattr(reference, of_reference)
        scores |= metric.fn(real, getattr(sample, of_sample), **metric.options(context))
    return scores


def check_metrics(metrics: Sequence[str]) -> None:
    """Raise ValueError, before any work, for a name that is not a registered metric of one image set."""
    for name in metrics:
        if entry(name).reads is None:
            raise ValueError(f"metric {name!r} does not score one image set; the evaluation runs it on its own")


def evaluate(
    G: nn.Module, latent: Latent, heldout: Images, train: Blocks, extractor: Extractor, classifier: Classifier,
    reference: Reference, class_mix: np.ndarray, cfg: EvalConfig, *, embed: Embed = in_process,
    metrics: Sequence[str] = REPORTED, progress: Callable[[str], None] = lambda note: None,
) -> Evaluation:
    """G's report: its samples (as many as `heldout`, labels drawn in `class_mix`) against the reference, beside the
    held-out images' floor; memorisation among `train`'s images; FID over eval.fid_draws further draws."""
    check_metrics(metrics)
    n = len(heldout)
    inputs, fake_images = draw(G, latent, n, cfg.seed, class_mix)
    fake, real = (embed_set(extractor, classifier, images, embed) for images in (fake_images, heldout))
    model, floor = (score(s, reference, cfg.seed, cfg.coverage_min_fraction, metrics) for s in (fake, real))
    # Memorisation: each sample's nearest training image against the held-out images': in pixels among every training
    # image (uint8 read in [0, 1], like the samples), in features among the reference's.
    pixels = find_memorisation(train, fake_images, heldout)
    features = find_memorisation(reference.feats, fake.feats, real.feats)
    progress("samples scored")
    first = model["fid"] if "fid" in model else reference.fid(fake.feats)  # the scored draw: its FID once
    draws = [first] + fids_of_draws(G, latent, n, extractor, reference, class_mix, cfg, embed, progress)
    report = {
        "num_images": n, "feature_extractor": extractor.key, "feature_network": extractor.name, "model": model, "real_vs_real": floor,
        "fid_draws": {"mean": float(np.mean(draws)), "std": float(np.std(draws)), "values": draws},
        "reference_class_histogram": [round(float(h), 4) for h in reference.hist],
        "memorisation": {"pixels": summary(pixels), "features": summary(features)},
        "collapsed": watchdog.class_collapse(model["effective_classes"], floor["effective_classes"], cfg.collapse_ratio)
        if "effective_classes" in model else None,
    }
    by_label = None
    if latent.num_classes:
        report["conditional"], by_label = label_scores(G, latent, classifier, cfg.seed)
    if latent.info_categorical:
        agreement, mapping = code_agreement(inputs.code, fake.classes.argmax(1), latent.info_categorical, fake.classes.shape[1])
        report["infogan"] = {"code_class_agreement": agreement, "code_to_class": mapping}
    report["metrics"] = listed(report, metrics)
    return Evaluation(report, fake_images, heldout, fake.classes.argmax(1), pixels.closest, by_label)


def fids_of_draws(
    G: nn.Module, latent: Latent, n: int, extractor: Extractor, reference: Reference, class_mix: np.ndarray, cfg: EvalConfig,
    embed: Embed, progress: Callable[[str], None],
) -> list[float]:
    """The FID on `eval.fid_draws` further draws of n samples (seeds seed+1, ...): with 1000 samples one draw moves by
    about a tenth either way, which a single number hides."""
    fids = []
    for k in range(1, cfg.fid_draws + 1):
        fids.append(reference.fid(embed(extractor, draw(G, latent, n, cfg.seed + k, class_mix)[1])[0]))
        progress(f"draw {k}")
    return fids


def label_scores(G: nn.Module, latent: Latent, classifier: Classifier, seed: int) -> tuple[dict, torch.Tensor]:
    """Conditional models: how often the classifier agrees with the label asked for, per class, over BY_LABEL samples
    each; with those samples [K, BY_LABEL, C, H, W]."""
    inputs = sampling.per_class_inputs(latent, BY_LABEL, seed)
    images = inputs.generate(G, latent)
    accuracy = label_accuracy(classify(classifier, images)[1], inputs.label, latent.num_classes)
    scores = {"per_class_accuracy": [round(a, 4) for a in accuracy], "min_accuracy": min(accuracy), "mean_accuracy": float(np.mean(accuracy))}
    return scores, images.view(latent.num_classes, BY_LABEL, *images.shape[1:])


def row(name: str, label: str, value: float, spec: str, std: float | None = None, floor: float | None = None,
        floor_std: float | None = None) -> dict:
    """One line of a report's `metrics` list: what a summary shows of one number."""
    return {"name": name, "label": label, "value": value, "std": std, "floor": floor, "floor_std": floor_std, "format": spec}


def listed(report: dict, metrics: Sequence[str]) -> list[dict]:
    """The report's numbers in the order a summary shows them: each metric's (as its entry shows it) beside the floor's,
    then the FID over draws, memorisation, and the conditional and InfoGAN scores where the model has them."""
    model, floor = report["model"], report["real_vs_real"]
    rows = [row(name, s.label, model[s.key], s.spec, model.get(s.std), floor[s.key], floor.get(s.std))
            for name in metrics for s in entry(name).shown]
    draws = report["fid_draws"]
    rows.append(row("fid_draws", f"FID over {len(draws['values'])} draws", draws["mean"], ".2f", draws["std"]))
    rows += [row("memorisation", f"{s.label} ({space})", report["memorisation"][space][s.key], s.spec)
             for space in ("pixels", "features") for s in entry("memorisation").shown]
    if "conditional" in report:
        rows.append(row("conditional", "label accuracy, worst class", report["conditional"]["min_accuracy"], ".3f"))
    if "infogan" in report:
        rows.append(row("infogan", "code-class agreement", report["infogan"]["code_class_agreement"], ".3f"))
    return rows


def figure(value: float, std: float | None, spec: str) -> str:
    """'4.12 ± 0.30', or '4.12' without a spread, in the metric's format."""
    return format(value, spec) + ("" if std is None else f" ± {format(std, spec)}")


def shown(line: dict) -> str:
    """One row of a report's `metrics` as text: 'FID 4.12 ± 0.30 (floor 1.30 ± 0.10)'."""
    text = f"{line['label']} {figure(line['value'], line['std'], line['format'])}"
    return text if line["floor"] is None else f"{text} (floor {figure(line['floor'], line['floor_std'], line['format'])})"


def summary_line(report: dict) -> str:
    """Every number of a report, in its order, on one line."""
    return "; ".join(shown(line) for line in report["metrics"])


def headline(report: dict) -> str:
    """A report's first number (its first metric, FID by default) with the sample count and, if so, the collapse."""
    return (f"{shown(report['metrics'][0])}; {report['num_images']} samples" + (f", step {report['step']}" if "step" in report else "")
            + (f"; {report['collapsed']}" if report.get("collapsed") else ""))
