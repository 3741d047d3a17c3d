"""Memorisation: does the generator hand back training samples?

Each generated sample's distance to its nearest training sample is set against the same distance for
held-out real samples, which the generator never saw: a generated sample closer to the training set
than all but the closest `percentile` % of held-out reals is counted as memorised. Works on pixels
(flattened) or on features.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from gan.metrics.distances import BUDGET, as_rows, nearest
from gan.metrics.registry import Features, Shown, register


@dataclass(frozen=True)
class Memorisation:
    fake_distances: np.ndarray  # [M] each generated sample's distance to its nearest training sample
    fake_nearest: np.ndarray  # [M] that training sample's index
    heldout_distances: np.ndarray  # [H] the same for held-out real samples
    threshold: float  # the `percentile`-th percentile of heldout_distances
    share: float  # share of generated samples with distance < threshold
    closest: np.ndarray  # [top, 2] (generated index, training index) of the closest pairs, closest first


def find_memorisation(
    train: Features | Callable[[], Iterable[Features]], fake: Features, heldout: Features, percentile: float = 5.0, top: int = 16,
    dtype: torch.dtype = torch.float32, budget: int = BUDGET,
) -> Memorisation:
    """Nearest-training-sample distances of generated and held-out samples, and the share memorised.

    `train` is the training set [N, ...], or a function that yields it in blocks, in the same order each time (a split
    read from disk a record batch at a time: two passes, for the mean and the search). uint8 inputs are pixels, read in
    [0, 1] as the networks see them. The training set, the large one, is converted one chunk at a time: 60k training
    images stay uint8 rather than become a float copy four times their size, or stay on disk."""
    blocks = train if callable(train) else lambda: [torch.as_tensor(train)]
    shift = _mean_row(blocks(), dtype, budget)  # all sets moved by the training set's mean, as `distances.centred` does
    f, h = (_rows(x, dtype) - shift for x in (fake, heldout))

    def centred(chunk: Features) -> torch.Tensor:
        return _rows(chunk, dtype) - shift

    # Generated and held-out samples in one walk over the training set.
    distances, nearest_index = nearest(torch.cat([f, h]), (torch.as_tensor(b) for b in blocks()), budget, centred)
    (fake_d, heldout_d), fake_i = distances.split([len(f), len(h)]), nearest_index[: len(f)]
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


def _rows(x: Features, dtype: torch.dtype) -> torch.Tensor:
    """[N, D] rows in `dtype`; uint8 pixels scaled to [0, 1]."""
    rows = as_rows(x, dtype)
    return rows / 255 if torch.as_tensor(x).dtype == torch.uint8 else rows


def _mean_row(blocks: Iterable[Features], dtype: torch.dtype, budget: int) -> torch.Tensor:
    """The mean of the blocks' rows (as `_rows` reads them), summed in float64 a chunk at a time."""
    total, count = torch.zeros((), dtype=torch.float64), 0
    for block in blocks:
        refs = torch.as_tensor(block).reshape(len(block), -1)
        step = max(1, budget // max(1, refs.shape[1]))
        total = total + sum(_rows(refs[i : i + step], dtype).sum(0, dtype=torch.float64) for i in range(0, len(refs), step))
        count += len(refs)
    if not count:
        raise ValueError("nearest neighbours among no reference rows")
    return (total / count).to(dtype)


def summary(m: Memorisation) -> dict[str, float]:
    """The memorised share, its threshold, and the median nearest-training distance of generated and held-out samples."""
    return {
        "memorised_share": m.share, "threshold": m.threshold,
        "nearest_train_median": float(np.median(m.fake_distances)), "heldout_nearest_train_median": float(np.median(m.heldout_distances)),
    }


# Not scored set by set (reads None): the evaluation runs it once, on the model's samples, with the held-out images as its floor.
@register("memorisation", reads=None, shown=(Shown("memorised", "memorised_share", ".1%"),))
def memorisation(real: Features, fake: Features, *, heldout: Features, percentile: float = 5.0) -> dict[str, float]:
    """`real` is the training set; `heldout` real samples the generator never saw. uint8 inputs are pixels read in
    [0, 1] (as `find_memorisation` reads them), so the distances are on that scale."""
    return summary(find_memorisation(real, fake, heldout, percentile))
