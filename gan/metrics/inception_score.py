"""Inception Score from the feature classifier's class probabilities."""

import numpy as np


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
