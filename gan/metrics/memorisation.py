"""Memorisation: does the generator hand back training samples?

Each generated sample's distance to its nearest training sample is set against the same distance for
held-out real samples, which the generator never saw: a generated sample closer to the training set
than all but the closest `percentile` % of held-out reals is counted as memorised. Works on pixels
(flattened) or on features.
"""

from dataclasses import dataclass

import numpy as np
import torch

from gan.metrics.distances import BUDGET, as_rows, centred, nearest
from gan.metrics.registry import Features, register


@dataclass(frozen=True)
class Memorisation:
    fake_distances: np.ndarray  # [M] each generated sample's distance to its nearest training sample
    fake_nearest: np.ndarray  # [M] that training sample's index
    heldout_distances: np.ndarray  # [H] the same for held-out real samples
    threshold: float  # the `percentile`-th percentile of heldout_distances
    share: float  # share of generated samples with distance < threshold
    closest: np.ndarray  # [top, 2] (generated index, training index) of the closest pairs, closest first


def find_memorisation(
    train: Features, fake: Features, heldout: Features, percentile: float = 5.0, top: int = 16,
    dtype: torch.dtype = torch.float32, budget: int = BUDGET,
) -> Memorisation:
    """Nearest-training-sample distances of generated and held-out samples, and the share memorised."""
    t, f, h = centred(as_rows(train, dtype), as_rows(fake, dtype), as_rows(heldout, dtype))
    fake_d, fake_i = nearest(f, t, budget)
    heldout_d, _ = nearest(h, t, budget)
    threshold = float(np.percentile(heldout_d.double().cpu().numpy(), percentile))
    order = fake_d.argsort()[:top]
    return Memorisation(
        fake_distances=fake_d.cpu().numpy(),
        fake_nearest=fake_i.cpu().numpy(),
        heldout_distances=heldout_d.cpu().numpy(),
        threshold=threshold,
        share=float((fake_d.double() < threshold).double().mean()),
        closest=torch.stack([order, fake_i[order]], dim=1).cpu().numpy(),
    )


@register("memorisation")
def memorisation(real: Features, fake: Features, *, heldout: Features, percentile: float = 5.0) -> dict[str, float]:
    """`real` is the training set; `heldout` real samples the generator never saw."""
    m = find_memorisation(real, fake, heldout, percentile)
    return {
        "memorised_share": m.share,
        "memorisation_threshold": m.threshold,
        "nearest_train_median": float(np.median(m.fake_distances)),
        "heldout_nearest_train_median": float(np.median(m.heldout_distances)),
    }
