"""Density and coverage (Naeem et al. 2020): precision and recall made robust to outliers.

Only real samples' k-NN balls are used (the real set is the trustworthy one). Density: how many real
balls hold a fake sample, on average, over k (about 1 when fakes are distributed like reals; it can
exceed 1). Coverage: share of real balls holding at least one fake sample.
"""

import torch

from gan.metrics.distances import BUDGET, as_rows, ball_counts, centred, knn_radii, same_size
from gan.metrics.registry import Features, Shown, register


@register("density_coverage", options=lambda context: {"cut": True, "seed": context.seed},
          shown=(Shown("density", "density"), Shown("coverage", "coverage")))
def density_coverage(
    real: Features, fake: Features, k: int = 5, dtype: torch.dtype = torch.float32, budget: int = BUDGET, cut: bool = False, seed: int = 0,
) -> dict[str, float]:
    """Density = sum over fakes of the real balls holding it / (k M); coverage = share of real balls holding a fake. With
    `cut`, against a seeded subset of M real rows (`distances.same_size`)."""
    real = same_size(real, len(fake), seed) if cut else real
    r, f = centred(as_rows(real, dtype), as_rows(fake, dtype))
    counts, covered = ball_counts(f, r, knn_radii(r, k, budget), budget)  # [M] balls per fake, [N] ball holds a fake
    return {"density": float(counts.sum()) / (k * len(f)), "coverage": float(covered.double().mean())}
