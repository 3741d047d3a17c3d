"""Yardsticks: what a score was measured with, kept so that generators trained on different data can be compared.

A yardstick is a feature extractor, the reference data its samples are compared with (the training images' features and
class histogram), the sample count and the latents' seed. Every evaluation measures with one (`Instrument`) and keeps
it beside its report as `yardstick.pt` (the extractor's weights, the reference features, the class mix conditional
labels are drawn in), so any generator can later be measured on it again, on any machine that can read the MLflow run
the report was logged to. The registry (pipelines/register.py) keeps two uses of it:

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

from gan import metrics, sampling
from gan.latent import Latent
from gan.sampling import Inputs
from pipelines.config import fingerprint
from pipelines.ray_embed import embed_images

BUNDLE = "yardstick.pt"  # beside every report.json, and logged with it (MLflow run artifact evaluation/yardstick.pt)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Yardstick:
    """What one score was measured with. Scores are comparable only between equal keys."""

    extractor: str  # the feature extractor's key (its network, and for the classifier its data, settings and code)
    dataset: str  # fingerprint of the reference data: the training images the samples are compared with
    num_images: int  # samples per score (and held-out images in the floor)
    seed: int  # the latents' seed (eval.seed); also the bootstrap's
    image_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    reference_rows: int = 0  # how many of the dataset's training images the reference holds (eval.train_sample)
    code: str = ""  # the digest of the evaluation's code, which computes every score

    @property
    def key(self) -> str:
        return fingerprint(self.extractor, self.dataset, self.num_images, self.seed, self.reference_rows, self.code)

    def as_dict(self) -> dict:
        return {**asdict(self), "image_shape": list(self.image_shape), "class_names": list(self.class_names), "key": self.key}

    @classmethod
    def of_dict(cls, d: dict) -> "Yardstick":
        return cls(d["extractor"], d["dataset"], int(d["num_images"]), int(d["seed"]), tuple(d["image_shape"]), tuple(d["class_names"]),
                   int(d.get("reference_rows", 0)), d.get("code", ""))

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


@dataclass(frozen=True)
class Embedded:
    """One image set as a yardstick reads it."""

    feats: np.ndarray  # [N, D] the extractor's features: FID, KID, the k-NN metrics, feature memorisation
    probs: np.ndarray  # [N, K'] the extractor's softmax: the Inception Score
    classes: np.ndarray  # [N, K] the domain classifier's probabilities: class coverage, collapse, InfoGAN agreement


def embed(extractor: metrics.Extractor, classifier: metrics.Classifier, images: np.ndarray | torch.Tensor, ray_min_images: int) -> Embedded:
    """An image set through the extractor (in Ray tasks when large) and, for the class metrics, the domain classifier."""
    feats, probs = embed_images(extractor, images, ray_min_images)
    classes = probs if extractor.network is classifier else metrics.embed(classifier, images)[1]
    return Embedded(feats, probs, classes)


def narrowed(values: np.ndarray) -> np.ndarray:
    """Float64 values as float32 when that loses nothing (the networks compute in float32 and `embed` widens): half
    the bytes, and the very same values loaded back."""
    narrow = values.astype(np.float32)
    return narrow if np.array_equal(narrow, values) else values


@dataclass(frozen=True)
class Instrument:
    """A yardstick ready to measure: its networks, its reference and the class mix samples are drawn in."""

    yardstick: Yardstick
    extractor: metrics.Extractor
    classifier: metrics.Classifier  # the domain classifier (the extractor too, unless that is Inception)
    reference: metrics.Reference
    class_mix: np.ndarray  # [K] the reference data's class shares: conditional models draw their labels in it

    def draw(self, G: torch.nn.Module, latent: Latent, seed: int | None = None) -> tuple[Inputs, torch.Tensor]:
        """num_images samples of G ([N, C, H, W] in [0, 1]) from the yardstick's latents (or those of another seed)."""
        inputs = sampling.random_inputs(latent, self.yardstick.num_images, self.yardstick.seed if seed is None else seed,
                                        class_probs=self.class_mix)
        return inputs, inputs.generate(G, latent)

    def embed(self, images: np.ndarray | torch.Tensor, ray_min_images: int) -> Embedded:
        return embed(self.extractor, self.classifier, images, ray_min_images)

    def score(self, embedded: Embedded, coverage_min_fraction: float) -> metrics.Scores:
        """Every metric of one embedded image set against the reference; the bootstrap is seeded by the yardstick."""
        return metrics.score(embedded.feats, embedded.probs, self.reference, coverage_min_fraction, self.yardstick.seed,
                             classes=embedded.classes)

    def measure(self, G: torch.nn.Module, latent: Latent, ray_min_images: int, coverage_min_fraction: float) -> metrics.Scores:
        """A generator's scores on this yardstick: its samples from the yardstick's latents, embedded and scored."""
        return self.score(self.embed(self.draw(G, latent)[1], ray_min_images), coverage_min_fraction)

    def save(self, path: Path) -> Path:
        """Everything `load` needs to measure again, without the data: the networks' weights and the reference."""
        blob = {
            "format_version": FORMAT_VERSION, "yardstick": json.dumps(self.yardstick.as_dict()), "extractor": self.extractor.name,
            "classifier": self.classifier.state_dict(), "feats": torch.from_numpy(np.ascontiguousarray(narrowed(self.reference.feats))),
            "hist": torch.from_numpy(np.asarray(self.reference.hist, np.float64)), "class_mix": torch.from_numpy(self.class_mix),
            "kid_rescale": self.extractor.kid_rescale,
        }
        torch.save(blob, path)
        return path

    @classmethod
    def load(cls, path: Path, inception_weights: str | None = None) -> "Instrument":
        """A saved instrument; an Inception yardstick needs the very weights file it was measured with (`inception_weights`)."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: yardstick format_version {blob.get('format_version')!r}, expected {FORMAT_VERSION}")
        yardstick = Yardstick.of_dict(json.loads(blob["yardstick"]))
        classifier = metrics.Classifier(yardstick.image_shape, len(yardstick.class_names))
        classifier.load_state_dict(blob["classifier"])
        classifier.eval()
        if blob["extractor"] == "inception":
            if inception_weights is None or metrics.inception_key(Path(inception_weights).expanduser()) != yardstick.extractor:
                raise ValueError(f"the yardstick {yardstick.key} measures with Inception weights {yardstick.extractor}; "
                                 f"eval.inception_weights = {inception_weights!r} is not that file")
            extractor = metrics.build_extractor("inception", inception_weights=inception_weights)
        else:
            extractor = metrics.build_extractor(blob["extractor"], classifier=classifier, classifier_key=yardstick.extractor)
        reference = metrics.Reference.of(blob["feats"].numpy().astype(np.float64), blob["hist"].numpy(), bool(blob["kid_rescale"]))
        return cls(yardstick, extractor, classifier, reference, blob["class_mix"].numpy())
