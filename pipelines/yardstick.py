"""Yardsticks: what a score was measured with, kept so that generators trained on different data can be compared.

A yardstick is a feature extractor, the reference data its samples are compared with (the training images' features and
class histogram), the sample count and the latents' seed. Here too the pieces it is made of, each kept in the working
folder once: the feature classifier trained on the data (`feature_classifier`), the self-supervised encoder trained on
its images (`feature_encoder`), the extractor one of them serves as (or the Inception network; `feature_extractor`, as
`gan.config.chosen_extractor` picks it), and the reference (`reference_of`). Every evaluation measures with one (`Instrument`) and keeps
it beside its report as `yardstick.pt` (the extractor's weights, the reference features, the class mix conditional
labels are drawn in), so any generator can later be measured on it again, on any machine that can read the MLflow run
the report was logged to. The registry (pipelines/stages/register.py) keeps two uses of it:

- the model's yardstick, fixed by its first version and named on the registered model (tag `yardstick`): every later
  version is measured on it too (`yardstick_fid`), so the versions of a model read on one scale across data versions;
- head-to-head promotion: a champion measured on other data than a challenger is measured again on the challenger's
  yardstick (tag `score.<yardstick key>` on the champion's version, computed once per champion and yardstick).
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gan import files
from gan.config import ConfigError, check_eval, chosen_extractor
from gan.batches import with_mirror_images
from gan.data.reader import iter_split, load_split, sample_rows
from gan.latent import Latent
from gan.metrics import evaluation
from gan.metrics.classes import class_histogram
from gan.metrics.classifier import Classifier, accuracy, source_digest, train_classifier
from gan.metrics.evaluation import Embedded, Reference, embed_set
from gan.metrics import selfsupervised
from gan.metrics.extractors import Extractor, build_extractor, inception_key, rebuild
from gan.metrics.inception import WeightsError
from gan.metrics.selfsupervised import Encoder, train_encoder, view_accuracy
from gan.saved import load_array, load_tensors
from pipelines.cluster.embed import embed_images
from pipelines.config import PipelineConfig, fingerprint, mirror_tag
from pipelines.workspace import Workspace

BUNDLE = "yardstick.pt"  # beside every report.json, and logged with it (MLflow run artifact evaluation/yardstick.pt)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Yardstick:
    """What one score was measured with. Scores are comparable only between equal keys."""

    extractor: str  # the feature extractor's key (its network, and for the classifier and the encoder its data, settings and code)
    dataset: str  # fingerprint of the reference data: the training images the samples are compared with
    num_images: int  # samples per score (and held-out images in the floor)
    seed: int  # the latents' seed (eval.seed); also the bootstrap's
    image_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    reference_rows: int = 0  # how many of the dataset's training images the reference holds (eval.train_sample)
    code: str = ""  # the digest of the evaluation's code, which computes every score
    mirror: bool = False  # data.mirror: the reference holds each training image and its mirror image, the floor half mirrored

    @property
    def key(self) -> str:
        return fingerprint(self.extractor, self.dataset, self.num_images, self.seed, self.reference_rows, self.code,
                           *(["mirror"] if self.mirror else []))  # the keys of unmirrored yardsticks stay as they were

    def as_dict(self) -> dict:
        return {**asdict(self), "image_shape": list(self.image_shape), "class_names": list(self.class_names), "key": self.key}

    @classmethod
    def of_dict(cls, d: dict) -> "Yardstick":
        return cls(d["extractor"], d["dataset"], int(d["num_images"]), int(d["seed"]), tuple(d["image_shape"]), tuple(d["class_names"]),
                   int(d.get("reference_rows", 0)), d.get("code", ""), bool(d.get("mirror", False)))

    def mismatch(self, image_shape: tuple[int, ...], class_names: tuple[str, ...]) -> str | None:
        """Why images of this shape and class set cannot be measured on this yardstick, or None when they can."""
        if tuple(image_shape) != self.image_shape:
            return f"are {shape(image_shape)} images, the yardstick's {shape(self.image_shape)}"
        if tuple(class_names) != self.class_names:
            return f"have the classes {names(class_names)}, the yardstick's {names(self.class_names)}"
        return None


def shape(image_shape: tuple[int, ...]) -> str:
    return "x".join(map(str, image_shape))


def names(class_names: tuple[str, ...]) -> str:
    shown = ", ".join(class_names[:6]) + (", ..." if len(class_names) > 6 else "")
    return f"{len(class_names)} ({shown})"


def embedder(ray_min_images: int) -> evaluation.Embed:
    """The evaluation's `embed`: in Ray tasks for sets of at least `ray_min_images` images, else in this process."""
    return lambda extractor, images: embed_images(extractor, images, ray_min_images)


def embed(extractor: Extractor, classifier: Classifier, images: np.ndarray | torch.Tensor, ray_min_images: int) -> Embedded:
    """An image set through the extractor (in Ray tasks when large) and, for the class metrics, the domain classifier."""
    return embed_set(extractor, classifier, images, embedder(ray_min_images))


def narrowed(values: np.ndarray) -> np.ndarray:
    """Float64 values as float32 when that loses nothing (the networks compute in float32 and `embed` widens): half
    the bytes, and the very same values loaded back."""
    narrow = values.astype(np.float32)
    return narrow if np.array_equal(narrow, values) else values


@dataclass(frozen=True)
class Instrument:
    """A yardstick ready to measure: its networks, its reference and the class mix samples are drawn in."""

    yardstick: Yardstick
    extractor: Extractor
    classifier: Classifier  # the domain classifier (the extractor too, unless that is the encoder or Inception)
    reference: Reference
    class_mix: np.ndarray  # [K] the reference data's class shares: conditional models draw their labels in it

    def embed(self, images: np.ndarray | torch.Tensor, ray_min_images: int) -> Embedded:
        return embed(self.extractor, self.classifier, images, ray_min_images)

    def score(self, embedded: Embedded, coverage_min_fraction: float) -> dict:
        """Every metric of one embedded image set against the reference (evaluation.score), seeded by the yardstick."""
        return evaluation.score(embedded, self.reference, self.yardstick.seed, coverage_min_fraction)

    def measure(self, G: torch.nn.Module, latent: Latent, ray_min_images: int, coverage_min_fraction: float) -> dict:
        """A generator's scores on this yardstick: its samples from the yardstick's latents, embedded and scored."""
        images = evaluation.draw(G, latent, self.yardstick.num_images, self.yardstick.seed, self.class_mix)[1]
        return self.score(self.embed(images, ray_min_images), coverage_min_fraction)

    def save(self, path: Path) -> Path:
        """Everything `load` needs to measure again, without the data: the networks' weights and the reference."""
        blob = {
            "format_version": FORMAT_VERSION, "yardstick": json.dumps(self.yardstick.as_dict()), "extractor": self.extractor.name,
            "classifier": self.classifier.state_dict(), "feats": torch.from_numpy(np.ascontiguousarray(narrowed(self.reference.feats))),
            "hist": torch.from_numpy(np.asarray(self.reference.hist, np.float64)), "class_mix": torch.from_numpy(self.class_mix),
            "kid_rescale": self.extractor.kid_rescale,
            # The encoder's weights and constructor arguments (the classifier's are above; Inception's are the user's file).
            **({"encoder": self.extractor.network.state_dict(), "encoder_spec": json.dumps(self.extractor.spec)}
               if self.extractor.name == "selfsupervised" else {}),
        }
        torch.save(blob, path)
        return path

    @classmethod
    def load(cls, path: Path, inception_weights: str | None = None) -> "Instrument":
        """A saved instrument; an Inception yardstick needs the very weights file it was measured with (`inception_weights`).
        A file that is not one is a ForeignFile (a ValueError, as the other reasons it cannot measure)."""
        blob = load_tensors(path, str(path), "a yardstick this project wrote")
        if blob.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: yardstick format_version {blob.get('format_version')!r}, expected {FORMAT_VERSION}")
        yardstick = Yardstick.of_dict(json.loads(blob["yardstick"]))
        classifier = Classifier(yardstick.image_shape, len(yardstick.class_names))
        classifier.load_state_dict(blob["classifier"])
        classifier.eval()
        if blob["extractor"] == "inception":
            if inception_weights is None or inception_key(Path(inception_weights).expanduser()) != yardstick.extractor:
                raise ValueError(f"the yardstick {yardstick.key} measures with Inception weights {yardstick.extractor}; "
                                 f"eval.inception_weights = {inception_weights!r} is not that file")
            extractor = build_extractor("inception", inception_weights=inception_weights)
        elif blob["extractor"] == "selfsupervised":
            encoder = rebuild(Encoder, json.loads(blob["encoder_spec"]), blob["encoder"])
            extractor = build_extractor("selfsupervised", encoder=encoder, encoder_key=yardstick.extractor)
        else:
            extractor = build_extractor(blob["extractor"], classifier=classifier, classifier_key=yardstick.extractor)
        reference = Reference.of(blob["feats"].numpy().astype(np.float64), blob["hist"].numpy(), bool(blob["kid_rescale"]))
        return cls(yardstick, extractor, classifier, reference, blob["class_mix"].numpy())


def feature_extractor_key(cfg: PipelineConfig, manifest: dict) -> str:
    """Names the FID/IS feature classifier: scores are comparable only between equal keys. It depends on the data,
    the classifier's settings and its own code only, so a change elsewhere in `gan` keeps champions comparable."""
    return fingerprint(
        manifest["fingerprint"], cfg.eval.classifier_epochs, cfg.eval.classifier_seed, cfg.eval.classifier_augment, source_digest(),
        *sample_tag(cfg, manifest),
    )


def train_rows(cfg: PipelineConfig, manifest: dict) -> np.ndarray:
    """The training split's rows the evaluation holds in memory (eval.train_sample): a seeded sample, or every row of a
    smaller split."""
    return sample_rows(manifest["rows"]["train"], cfg.eval.train_sample)


def sample_tag(cfg: PipelineConfig, manifest: dict) -> tuple[int, ...]:
    """What eval.train_sample adds to a cache key: nothing when the sample is the whole split, so the classifier and
    reference of a data set within the sample keep their keys whatever the setting."""
    return (cfg.eval.train_sample,) if 0 < cfg.eval.train_sample < manifest["rows"]["train"] else ()


def feature_classifier(cfg: PipelineConfig, dataset_dir: Path, manifest: dict) -> tuple[Classifier, float]:
    """Train the FID/IS feature classifier once per dataset fingerprint and classifier config; cache it."""
    path = Workspace.of(cfg.runtime.workdir).classifiers / f"{feature_extractor_key(cfg, manifest)}.pt"
    image_shape, num_classes = tuple(manifest["image_shape"]), manifest["num_classes"]
    model = Classifier(image_shape, num_classes)
    if path.is_file():
        blob = load_tensors(path, str(path), "a feature classifier this project cached", remedy="; remove it and run again: it retrains")
        model.load_state_dict(blob["state"])
        return model.eval(), float(blob["accuracy"])
    print(f"[evaluate] training the feature classifier ({cfg.eval.classifier_epochs} epochs)")
    images, labels = load_split(dataset_dir, "train", train_rows(cfg, manifest))
    model = train_classifier(images, labels, num_classes, cfg.eval.classifier_epochs, cfg.eval.classifier_seed, cfg.eval.classifier_augment)
    held_out = accuracy(model, iter_split(dataset_dir, "heldout"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.replacing(path) as tmp:
        torch.save({"state": model.state_dict(), "accuracy": held_out}, tmp)
    return model, held_out


def encoder_key(cfg: PipelineConfig, manifest: dict) -> str:
    """Names the self-supervised encoder, as `feature_extractor_key` the classifier: its data, settings and own code."""
    return "selfsupervised-" + fingerprint(
        manifest["fingerprint"], cfg.eval.ssl_epochs, cfg.eval.ssl_seed, selfsupervised.source_digest(), *sample_tag(cfg, manifest)
    )


def feature_encoder(cfg: PipelineConfig, dataset_dir: Path, manifest: dict) -> Encoder:
    """Train the self-supervised encoder once per dataset fingerprint and encoder config; cache it beside the classifiers."""
    path = Workspace.of(cfg.runtime.workdir).classifiers / f"{encoder_key(cfg, manifest)}.pt"
    if path.is_file():
        blob = load_tensors(path, str(path), "a self-supervised encoder this project cached", remedy="; remove it and run again: it retrains")
        return rebuild(Encoder, json.loads(blob["spec"]), blob["state"])
    print(f"[evaluate] training the self-supervised encoder ({cfg.eval.ssl_epochs} epochs)")
    images, _ = load_split(dataset_dir, "train", train_rows(cfg, manifest))
    losses: list[float] = []
    model = train_encoder(images, cfg.eval.ssl_epochs, cfg.eval.ssl_seed, losses=losses)
    heldout = load_split(dataset_dir, "heldout", sample_rows(manifest["rows"]["heldout"], 1000))[0]
    # Its own sanity check, as accuracy is the classifier's (chance: 1 / (2 x 1000 - 1)).
    held_out = view_accuracy(model, heldout, cfg.eval.ssl_seed) if len(heldout) > 1 else float("nan")
    print(f"[evaluate] self-supervised encoder: NT-Xent loss {losses[0]:.2f} -> {losses[-1]:.2f}; "
          f"held-out view accuracy {held_out:.3f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.replacing(path) as tmp:
        torch.save({"state": model.state_dict(), "spec": json.dumps(model.spec), "losses": torch.tensor(losses),
                    "view_accuracy": held_out}, tmp)
    return model


def feature_extractor(
    cfg: PipelineConfig, dataset_dir: Path, manifest: dict, classifier: Classifier | None = None, name: str | None = None
) -> Extractor:
    """The network FID, KID, the k-NN metrics and feature memorisation read: `name`, else as `chosen_extractor` picks it
    for the data; `classifier` is the domain classifier when the caller holds it (else it is loaded or trained)."""
    check_eval(cfg.eval)  # the weights file may have gone since the config was loaded
    name = name or chosen_extractor(cfg.eval, manifest["num_classes"])[0]
    if name == "classifier":
        classifier = classifier if classifier is not None else feature_classifier(cfg, dataset_dir, manifest)[0]
        sources = {"classifier": classifier, "classifier_key": feature_extractor_key(cfg, manifest)}
    elif name == "selfsupervised":
        sources = {"encoder": feature_encoder(cfg, dataset_dir, manifest), "encoder_key": encoder_key(cfg, manifest)}
    else:
        sources = {"inception_weights": cfg.eval.inception_weights}
    try:
        return build_extractor(name, **sources)
    except WeightsError as err:
        raise ConfigError(f"config error: eval.inception_weights = {cfg.eval.inception_weights!r}: {err}") from None


def quick_fid_extractor(cfg: PipelineConfig, manifest: dict) -> tuple[str, str]:
    """(name, key) of the extractor quick FIDs measure with during training: the evaluation's, but the classifier in place
    of Inception (gan.metrics.quick_fid.NETWORKS says why), so that a report's quick FIDs read on its own scale."""
    name = chosen_extractor(cfg.eval, manifest["num_classes"])[0]
    if name == "selfsupervised":
        return name, encoder_key(cfg, manifest)
    return "classifier", feature_extractor_key(cfg, manifest)


def as_trained(cfg: PipelineConfig, images: np.ndarray) -> np.ndarray:
    """Training images [N, C, H, W] as the run's data distribution holds them: with data.mirror each beside its mirror image."""
    return with_mirror_images(images) if cfg.data.mirror else images


def reference_of(
    cfg: PipelineConfig, extractor: Extractor, classifier: Classifier, classifier_key: str, manifest: dict,
    dataset_dir: Path,
) -> Reference:
    """The training images' features and class histogram as every score reads them: those of the sample of `train_rows`,
    the largest set an evaluation embeds, embedded once per extractor, classifier, dataset and sample, and kept."""
    key = fingerprint(extractor.key, classifier_key, manifest["fingerprint"], *sample_tag(cfg, manifest), *mirror_tag(cfg))
    folder = Workspace.of(cfg.runtime.workdir).features / f"train-{key}"
    if not folder.is_dir():
        images = as_trained(cfg, load_split(dataset_dir, "train", train_rows(cfg, manifest))[0])
        embedded = embed(extractor, classifier, images, cfg.eval.ray_embed_min_images)
        files.remove_stale_temporaries(folder.parent)
        with files.written_aside(folder) as tmp:  # both arrays appear together, as float32 when that loses nothing
            np.save(tmp / "feats.npy", narrowed(embedded.feats))
            np.save(tmp / "classes.npy", narrowed(embedded.classes))
    remedy = f"; remove {folder} and run again: it is embedded anew"
    feats, classes = (load_array(folder / f"{name}.npy", "a feature array this project cached", remedy).astype(np.float64)
                      for name in ("feats", "classes"))
    return Reference.of(feats, class_histogram(classes), extractor.kid_rescale)


def label_shares(manifest: dict, names: list[str]) -> list[float]:
    """The training split's share of each named class, by label (0 for a class the dataset lacks)."""
    counts = manifest["class_counts"]["train"]
    by_name = {name: counts.get(str(k), 0) for k, name in enumerate(manifest["class_names"])}
    total = sum(by_name.values())
    return [by_name.get(name, 0) / total for name in names]


def class_mix(manifest: dict) -> np.ndarray:
    """The training split's class shares [K], from the manifest."""
    return np.array(label_shares(manifest, manifest["class_names"]), dtype=np.float64)
