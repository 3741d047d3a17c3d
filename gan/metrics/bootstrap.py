"""Bootstrap intervals: how far a score would move with another draw of the same number of samples.

The generated (or held-out) set is resampled with replacement and re-scored against the fixed reference
statistics; the spread of those scores is the interval a report prints beside the score ("4.1 ± 0.3").
"""

import numpy as np

from gan.metrics.fid import frechet_distance_from_stats, gaussian_stats


def fid_bootstrap(feats: np.ndarray, reference_mu: np.ndarray, reference_cov: np.ndarray, rounds: int = 50, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the FID of `rounds` resamples of feats [N, D] against fixed reference statistics."""
    rng = np.random.default_rng(seed)
    fids = [frechet_distance_from_stats(*gaussian_stats(feats[rng.integers(0, len(feats), len(feats))]), reference_mu, reference_cov) for _ in range(rounds)]
    return float(np.mean(fids)), float(np.std(fids))
