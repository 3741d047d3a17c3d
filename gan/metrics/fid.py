"""Frechet distance between two feature sets, each summarised as a Gaussian (FID, Heusel et al. 2017).

`StreamingStats` gathers the mean and covariance batch by batch in float64, so 50k features never sit in
memory at once; `frechet_distance_from_stats` then needs only the two (mean, covariance) pairs. Every FID here
(the evaluation's, its bootstrap and further draws, the quick FID during training) takes this one path.
"""

import numpy as np
import torch

from gan.metrics.bootstrap import bootstrap
from gan.metrics.registry import Features, Shown, register

BOOTSTRAP_ROUNDS = 50  # resamples behind the evaluation's FID spread


class StreamingStats:
    """Mean [D] and covariance [D, D] of features that arrive in batches, accumulated in float64.

    Each batch is reduced to (count, mean, centred sum of outer products) and merged with the running
    totals by Chan et al.'s pairwise update; unlike a raw sum of x x^T it does not cancel catastrophically
    when the mean is large against the spread.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None  # [D] float64
        self.m2: torch.Tensor | None = None  # [D, D] float64: sum of (x - mean)(x - mean)^T

    def update(self, feats: Features) -> "StreamingStats":
        """Add a batch of features [B, D]."""
        x = torch.as_tensor(feats).to(torch.float64)
        assert x.ndim == 2, f"features must be [B, D], got shape {tuple(x.shape)}"
        if self.mean is None:
            self.mean, self.m2 = x.new_zeros(x.shape[1]), x.new_zeros(x.shape[1], x.shape[1])
        assert x.shape[1] == self.mean.shape[0], f"batch of {x.shape[1]}-d features into {self.mean.shape[0]}-d stats"
        nb = x.shape[0]
        if nb == 0:
            return self
        mean_b = x.mean(0)
        xc = x - mean_b  # [B, D]
        delta, total = mean_b - self.mean, self.n + nb
        self.mean += delta * (nb / total)
        self.m2 += xc.T @ xc + torch.outer(delta, delta) * (self.n * nb / total)
        self.n = total
        return self

    def stats(self, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(mean [D], covariance [D, D] with ddof 1, as np.cov), float64 numpy.

        With `check`, raises ValueError with fewer samples than dimensions + 1: the covariance is then singular
        (rank <= N - 1 < D), and FID on it is dominated by the missing directions.
        """
        if check:
            check_sample_count(self.n, 0 if self.mean is None else self.mean.shape[0])
        return self.mean.cpu().numpy(), (self.m2 / (self.n - 1)).cpu().numpy()


def check_sample_count(n: int, dim: int) -> None:
    """Raise ValueError unless n samples of dim-d features give a full-rank covariance (n > dim, n >= 2)."""
    if n <= dim or n < 2:
        raise ValueError(
            f"FID needs more samples than feature dimensions: got {n} samples of {dim}-d features "
            f"(at least {max(dim + 1, 2)} needed, or the covariance is singular)"
        )


def streaming_stats(feats: Features, batch_size: int = 4096) -> StreamingStats:
    """StreamingStats of a feature array [N, D], fed in batches (as an evaluation that embeds on the fly would)."""
    stats = StreamingStats()
    for start in range(0, len(feats), batch_size):
        stats.update(feats[start : start + batch_size])
    return stats


def gaussian_stats(feats: Features, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] of features [N, D] through StreamingStats, unchecked: the evaluation checks its
    sample count before it embeds, and a quick FID on few samples is as noisy as its count makes it."""
    return streaming_stats(feats, batch_size).stats(check=False)


def frechet_distance(feats_a: Features, feats_b: Features) -> float:
    """Frechet distance between two feature sets [N, D], each summarised as a Gaussian."""
    return frechet_distance_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


def frechet_distance_from_stats(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    Tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric
    S_a^(1/2) S_b S_a^(1/2): stable when ReLU features leave a covariance singular. Never below 0 (the promotion
    gate refuses a negative score).
    """
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a), 0, None)).sum()
    distance = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_covmean)
    return max(0.0, distance)  # a distance: below 0 only by round-off, for (nearly) equal statistics


@register("fid", reads=("gaussian", "feats"), options=lambda context: {"bootstrap_rounds": BOOTSTRAP_ROUNDS, "seed": context.seed},
          shown=(Shown("FID", "fid", std="fid_bootstrap_std"),))
def fid(
    real: Features | tuple[np.ndarray, np.ndarray], fake: Features, batch_size: int = 4096, bootstrap_rounds: int = 0, seed: int = 0,
) -> dict[str, float]:
    """FID of `fake` against `real` (features, or their (mean, covariance) already), both through StreamingStats; with
    `bootstrap_rounds`, also the mean and std of the FID of as many resamples of `fake` (seeded by `seed`)."""
    reference = real if isinstance(real, tuple) else streaming_stats(real, batch_size).stats()
    scores = {"fid": frechet_distance_from_stats(*streaming_stats(fake, batch_size).stats(), *reference)}
    if bootstrap_rounds:
        mean, std = bootstrap(fake, lambda resampled: frechet_distance_from_stats(*gaussian_stats(resampled, batch_size), *reference),
                              bootstrap_rounds, seed)
        scores |= {"fid_bootstrap_mean": mean, "fid_bootstrap_std": std}
    return scores
