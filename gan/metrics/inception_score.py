"""Inception Score from the feature classifier's class probabilities."""

import numpy as np

from gan.metrics.registry import Shown, register


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


@register("inception_score", reads=(None, "probs"), shown=(Shown("IS", "inception_score", std="inception_score_std"),))
def inception_score_metric(real: None, fake: np.ndarray) -> dict[str, float]:
    """IS of the scored set's softmax [N, K]; the reference is not read."""
    mean, std = inception_score(fake)
    return {"inception_score": mean, "inception_score_std": std}
