"""The evaluation protocol: every score of one embedded image set against the training reference."""

from dataclasses import dataclass

import numpy as np

from gan.metrics.classes import class_histogram, effective_classes, kl_divergence
from gan.metrics.fid import frechet_distance
from gan.metrics.inception_score import inception_score


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
