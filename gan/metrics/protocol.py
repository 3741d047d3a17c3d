"""The evaluation protocol: every score of one embedded image set against the training reference.

The model's samples and the held-out real images (the floor) go through it with the same sample count, so
both carry the same small-sample bias and a report reads "FID 4.1 ± 0.3 (floor 1.3 ± 0.1)".
"""

from dataclasses import dataclass

import numpy as np

from gan.metrics.bootstrap import bootstrap
from gan.metrics.classes import class_histogram, effective_classes, kl_divergence
from gan.metrics.density_coverage import density_coverage
from gan.metrics.fid import frechet_distance_from_stats, gaussian_stats
from gan.metrics.inception_score import inception_score
from gan.metrics.kid import kid
from gan.metrics.precision_recall import precision_recall

KID_SUBSETS = 50  # subsets of min(1000, N) samples; their spread is KID's std


@dataclass(frozen=True)
class Scores:
    fid: float
    fid_bootstrap_mean: float
    fid_bootstrap_std: float
    kid: float
    kid_std: float
    precision: float
    recall: float
    density: float
    coverage: float
    inception_score: float
    inception_score_std: float
    classes_covered: int
    effective_classes: float
    class_kl: float
    class_histogram: list[float]


@dataclass(frozen=True)
class Reference:
    """The training images as the scores read them, summarised once: the mean and covariance (a [D, D] product over
    all R rows) and the KID scale serve the model, the floor and every latent draw alike."""

    feats: np.ndarray  # [R, D] features: KID, and a seeded subset of them for the k-NN metrics
    hist: np.ndarray  # [K] class histogram: the class KL
    mu: np.ndarray  # [D] mean of feats: FID
    cov: np.ndarray  # [D, D] covariance of feats: FID
    kid_scale: float  # KID divides both sets' features by it: feats' root mean square, or 1 (see score)

    @classmethod
    def of(cls, feats: np.ndarray, hist: np.ndarray, kid_rescale: bool = True) -> "Reference":
        """The reference of features [R, D] and class histogram [K]; `kid_rescale` as the extractor's."""
        scale = float(np.sqrt((feats.astype(np.float64) ** 2).mean())) if kid_rescale else 1.0
        return cls(feats, hist, *gaussian_stats(feats), scale)

    def fid(self, feats: np.ndarray) -> float:
        """FID of features [N, D] against the reference: the same number as frechet_distance(feats, self.feats)."""
        return frechet_distance_from_stats(*gaussian_stats(feats), self.mu, self.cov)


def score(
    feats: np.ndarray, probs: np.ndarray, reference: Reference, min_fraction: float, seed: int = 0, classes: np.ndarray | None = None,
) -> Scores:
    """Every metric of one embedded image set [N, D] (see `embed`) against the reference. FID and KID use the whole
    reference; the k-NN metrics a seeded subset of N reference rows, since their values depend on the two sets' sizes.
    IS reads `probs` [N, K'], the feature network's softmax; the class metrics read `classes` [N, K], the domain
    classifier's (the same as `probs` when the classifier is the feature network)."""
    hist = class_histogram(probs if classes is None else classes)
    is_mean, is_std = inception_score(probs)
    reference_feats, scale = reference.feats, reference.kid_scale
    same_size = reference_feats[np.random.default_rng(seed).choice(len(reference_feats), min(len(feats), len(reference_feats)), replace=False)]
    boot_mean, boot_std = bootstrap(feats, reference.fid, seed=seed)
    return Scores(
        fid=reference.fid(feats),
        fid_bootstrap_mean=boot_mean,
        fid_bootstrap_std=boot_std,
        # KID's cubic kernel (x.y / D + 1)^3 assumes features of order 1 (Inception's pool features are, and are
        # left as they are, so KID stays the published one); ReLU classifier features are larger, and the kernel's
        # cube then drowns the signal in noise: one global scale, the reference's root mean square, brings them to
        # order 1 for the model and the floor alike.
        **kid(reference_feats / scale, feats / scale, subsets=KID_SUBSETS, seed=seed),
        **precision_recall(same_size, feats),
        **density_coverage(same_size, feats),
        inception_score=is_mean,
        inception_score_std=is_std,
        classes_covered=int((hist >= min_fraction).sum()),
        effective_classes=effective_classes(hist),
        class_kl=kl_divergence(hist, reference.hist),
        class_histogram=[round(float(h), 4) for h in hist],
    )
