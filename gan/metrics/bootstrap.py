"""Bootstrap intervals: how far a score would move with another draw of the same number of samples.

The generated (or held-out) set is resampled with replacement and re-scored against the fixed reference;
the spread of those scores is the interval a report prints beside the score ("4.1 ± 0.3").
"""

from collections.abc import Callable

import numpy as np


def bootstrap(feats: np.ndarray, score: Callable[[np.ndarray], float], rounds: int = 50, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of `score` over `rounds` resamples (with replacement, seeded) of feats [N, D]."""
    rng = np.random.default_rng(seed)
    scores = [score(feats[rng.integers(0, len(feats), len(feats))]) for _ in range(rounds)]
    return float(np.mean(scores)), float(np.std(scores))
