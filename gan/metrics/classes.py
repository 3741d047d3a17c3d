"""Class coverage: which classes the classifier sees in generated images, and how labels or codes map to them."""

import numpy as np

from gan.metrics.registry import Shown, register


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


@register("classes", reads=("hist", "classes"), options=lambda context: {"min_fraction": context.min_fraction},
          shown=(Shown("classes", "classes_covered", "d"), Shown("effective classes", "effective_classes"), Shown("class KL", "class_kl", ".3f")))
def class_coverage(real: np.ndarray, fake: np.ndarray, min_fraction: float = 0.01) -> dict[str, float]:
    """Of the scored set's class probabilities [N, K]: the classes holding at least `min_fraction` of it, the effective
    class count, the KL from the reference's class histogram `real` [K], and the set's own histogram (a list)."""
    hist = class_histogram(fake)
    return {"classes_covered": int((hist >= min_fraction).sum()), "effective_classes": effective_classes(hist),
            "class_kl": kl_divergence(hist, real), "class_histogram": [round(float(h), 4) for h in hist]}
