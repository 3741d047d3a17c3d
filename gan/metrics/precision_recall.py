"""Improved precision and recall (Kynkaanniemi et al. 2019): fidelity and diversity as two separate numbers.

Each set is a union of k-NN balls (every sample's ball reaches its k-th nearest neighbour in its own
set). Precision: share of fake samples inside any real ball (are fakes realistic?). Recall: share of
real samples inside any fake ball (does the generator cover the data?).
"""

import torch

from gan.metrics.distances import BUDGET, as_rows, ball_counts, centred, knn_radii, same_size
from gan.metrics.registry import Features, Shown, register


@register("precision_recall", options=lambda context: {"cut": True, "seed": context.seed},
          shown=(Shown("precision", "precision"), Shown("recall", "recall")))
def precision_recall(
    real: Features, fake: Features, k: int = 3, dtype: torch.dtype = torch.float32, budget: int = BUDGET, cut: bool = False, seed: int = 0,
) -> dict[str, float]:
    """Precision and recall of fake [M, D] against real [N, D], k-NN radii with `k` neighbours; with `cut`, against a
    seeded subset of M real rows (`distances.same_size`)."""
    real = same_size(real, len(fake), seed) if cut else real
    r, f = centred(as_rows(real, dtype), as_rows(fake, dtype))
    fake_in_real, _ = ball_counts(f, r, knn_radii(r, k, budget), budget)  # [M] real balls holding each fake
    real_in_fake, _ = ball_counts(r, f, knn_radii(f, k, budget), budget)  # [N] fake balls holding each real
    return {"precision": float((fake_in_real > 0).double().mean()), "recall": float((real_in_fake > 0).double().mean())}
