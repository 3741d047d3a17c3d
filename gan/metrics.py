"""Offline image-quality metrics: FID, Inception Score and class coverage.

Standard FID/IS use an ImageNet Inception network whose weights cannot be fetched offline, and which
knows nothing of digits anyway. Here the feature network is a small CNN classifier trained on the
ingested data: FID is the Frechet distance between its penultimate features, IS uses its softmax.
The numbers are comparable between runs that share the classifier (same dataset fingerprint, same
classifier config), not with published Inception-based figures.
"""

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan.latent import Latent
from gan.sampling import generate

FEATURE_DIM = 128


class Classifier(nn.Module):
    """Two conv blocks and a 128-d feature layer; `features` feeds FID, `forward` gives logits for IS."""

    def __init__(self, image_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.image_shape = tuple(image_shape)
        c, h, w = image_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [32, H/2, W/2]
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [64, H/4, W/4]
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] in [0, 1] -> [N, 128]
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> logits [N, K]
        return self.head(self.features(x))


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] or floats in [0, 1] -> float tensor in [0, 1]."""
    images = torch.as_tensor(images)
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, epochs: int, seed: int, batch_size: int = 128) -> Classifier:
    """Fit the feature classifier with Adam on the training split."""
    torch.manual_seed(seed)
    model = Classifier(tuple(images.shape[1:]), num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = to_float(images), torch.as_tensor(np.array(labels, dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def embed(model: Classifier, images: np.ndarray | torch.Tensor, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, 128] float64, class probabilities [N, K] float64)."""
    model.eval()
    feats, probs = [], []
    for chunk in to_float(images).split(batch_size):
        f = model.features(chunk)
        feats.append(f.double())
        probs.append(F.softmax(model.head(f), dim=1).double())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def accuracy(model: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    _, probs = embed(model, images)
    return float((probs.argmax(1) == labels).mean())


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] of features [N, D]."""
    return feats.mean(0), np.cov(feats, rowvar=False)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between two feature sets [N, D], each summarised as a Gaussian."""
    return frechet_distance_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


def frechet_distance_from_stats(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    Tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric
    S_a^(1/2) S_b S_a^(1/2): stable when ReLU features leave a covariance singular.
    """
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_covmean)


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))), mean and std over `splits` chunks. 1 = useless, K = perfect.

    Rows are shuffled (seeded) first: each chunk's marginal p(y) must see every class, even when the
    images arrive sorted by class.
    """
    probs = probs[np.random.default_rng(0).permutation(len(probs))]
    scores = []
    for chunk in np.array_split(probs, splits):
        marginal = chunk.mean(0, keepdims=True)
        kl = (chunk * (np.log(chunk + 1e-12) - np.log(marginal + 1e-12))).sum(1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def class_histogram(probs: np.ndarray) -> np.ndarray:
    """Share of images assigned (argmax) to each class."""
    return np.bincount(probs.argmax(1), minlength=probs.shape[1]) / len(probs)


def effective_classes(hist: np.ndarray) -> float:
    """exp(entropy) of a class histogram: 10 for ten equal classes, 1 when every image falls into one."""
    nonzero = hist[hist > 0]
    return float(np.exp(-(nonzero * np.log(nonzero)).sum()))


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-6) -> float:
    """KL(p || q) between two histograms, smoothed so an empty class gives a large finite value."""
    p, q = (p + eps) / (p + eps).sum(), (q + eps) / (q + eps).sum()
    return float((p * np.log(p / q)).sum())


@dataclass(frozen=True)
class Scores:
    fid: float
    inception_score: float
    inception_score_std: float
    classes_covered: int
    effective_classes: float
    class_kl: float
    class_histogram: list[float]

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in self.__dict__.items() if k != "class_histogram"}


def score(feats: np.ndarray, probs: np.ndarray, reference_feats: np.ndarray, reference_hist: np.ndarray, min_fraction: float) -> Scores:
    """Every metric of one embedded image set (see `embed`) against the reference features and class histogram."""
    hist = class_histogram(probs)
    is_mean, is_std = inception_score(probs)
    return Scores(
        fid=frechet_distance(feats, reference_feats),
        inception_score=is_mean,
        inception_score_std=is_std,
        classes_covered=int((hist >= min_fraction).sum()),
        effective_classes=effective_classes(hist),
        class_kl=kl_divergence(hist, reference_hist),
        class_histogram=[round(float(h), 4) for h in hist],
    )


class QuickFID:
    """FID of a generator's samples against the training images' feature statistics, cheap enough to run
    every few epochs during training (on rank 0). Conditional models draw labels in the data's class mix."""

    def __init__(
        self, classifier: Classifier, mu: np.ndarray, cov: np.ndarray, class_probs: np.ndarray, samples: int, seed: int, key: str = ""
    ):
        self.classifier, self.mu, self.cov = classifier.eval(), mu, cov
        self.class_probs, self.samples, self.seed = class_probs, samples, seed
        self.key = key  # names the yardstick (the feature classifier); stored with every snapshot

    def save(self, path: Path) -> Path:
        blob = {
            "classifier": self.classifier.state_dict(), "image_shape": list(self.classifier.image_shape),
            "mu": torch.from_numpy(self.mu), "cov": torch.from_numpy(self.cov), "class_probs": torch.from_numpy(self.class_probs),
            "samples": self.samples, "seed": self.seed, "key": self.key,
        }
        torch.save(blob, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        return path

    @classmethod
    def load(cls, source: str | Path | bytes) -> "QuickFID":
        """From a file saved by `save`, or its bytes."""
        blob = torch.load(io.BytesIO(source) if isinstance(source, bytes) else source, map_location="cpu", weights_only=True)
        classifier = Classifier(tuple(blob["image_shape"]), len(blob["class_probs"]))
        classifier.load_state_dict(blob["classifier"])
        return cls(
            classifier, blob["mu"].numpy(), blob["cov"].numpy(), blob["class_probs"].numpy(), int(blob["samples"]), int(blob["seed"]), blob["key"]
        )

    def __call__(self, G: nn.Module, latent: Latent) -> float:
        gen = torch.Generator().manual_seed(self.seed)
        labels = torch.from_numpy(np.random.default_rng(self.seed).choice(len(self.class_probs), self.samples, p=self.class_probs))
        z, c = latent.sample(self.samples, gen, labels=labels)
        device = next(G.parameters()).device
        images = generate(G, z.to(device), None if c is None else c.to(device)).cpu()
        feats, _ = embed(self.classifier, images)
        return frechet_distance_from_stats(*gaussian_stats(feats), self.mu, self.cov)


def label_accuracy(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Per class k: the share of images generated with label k that the classifier assigns to class k."""
    predicted = probs.argmax(1)
    return [float((predicted[labels == k] == k).mean()) if (labels == k).any() else float("nan") for k in range(num_classes)]


def code_agreement(codes: np.ndarray, predicted: np.ndarray, num_codes: int, num_classes: int) -> tuple[float, list[int]]:
    """How well an unsupervised categorical code matches the classes: the best one-to-one mapping code -> class
    (Hungarian algorithm on the co-occurrence counts) and the share of images it explains."""
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415

    counts = np.zeros((num_codes, num_classes))
    np.add.at(counts, (codes, predicted), 1)
    rows, cols = linear_sum_assignment(-counts)
    mapping = [-1] * num_codes
    for r, c in zip(rows, cols):
        mapping[int(r)] = int(c)
    return float(counts[rows, cols].sum() / len(codes)), mapping
