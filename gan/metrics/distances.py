"""Chunked nearest-neighbour work shared by precision/recall, density/coverage and memorisation.

Every helper walks the rows in chunks sized so one chunk's distance matrix holds at most `budget` entries,
so 10k x 10k (or 60k training images) never needs an N x M matrix in memory at once.
"""

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from gan.metrics.registry import Features

BUDGET = 2**24  # distance-matrix entries per chunk: 64 MiB in float32


def as_rows(x: Features, dtype: torch.dtype) -> torch.Tensor:
    """Features [N, D] or images [N, C, H, W] (any dtype) -> [N, D'] float rows."""
    x = torch.as_tensor(x)
    return x.reshape(len(x), -1).to(dtype)


def same_size(real: Features, n: int, seed: int) -> Features:
    """A seeded subset of min(n, N) rows of real [N, D], drawn without replacement: the k-NN metrics' values depend on
    both sets' sizes, so the evaluation cuts the reference to the scored set's."""
    return real[np.random.default_rng(seed).choice(len(real), min(n, len(real)), replace=False)]


def centred(ref: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All sets moved by ref's mean: distances are unchanged, but cdist's |x|^2 + |y|^2 - 2 x.y cancels less
    in float32 when the points sit far from the origin (ReLU features do)."""
    shift = ref.mean(0, dtype=torch.float64).to(ref.dtype)
    return tuple(x - shift for x in (ref, *others))


def distance_chunks(queries: torch.Tensor, refs: torch.Tensor, budget: int = BUDGET) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, distances [b, N]) for consecutive chunks of query rows [M, D] against refs [N, D]."""
    step = max(1, budget // max(1, len(refs)))
    for start in range(0, len(queries), step):
        rows = slice(start, min(start + step, len(queries)))
        yield rows, torch.cdist(queries[rows], refs)


def knn_radii(feats: torch.Tensor, k: int, budget: int = BUDGET) -> torch.Tensor:
    """Distance from each row [N, D] to its k-th nearest other row -> [N]: the (k+1)-th smallest, as the
    row itself comes first at distance 0 (the convention of Kynkaanniemi et al. and Naeem et al.)."""
    if not 1 <= k < len(feats):
        raise ValueError(f"k-NN radius with k={k} needs 1 <= k < samples; got {len(feats)} samples")
    radii = torch.empty(len(feats), dtype=feats.dtype, device=feats.device)
    for rows, d in distance_chunks(feats, feats, budget):
        radii[rows] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def ball_counts(
    queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, budget: int = BUDGET
) -> tuple[torch.Tensor, torch.Tensor]:
    """For balls B(centre_i, radius_i): (how many balls hold each query [M] int64, whether each ball holds a query [N] bool)."""
    counts = torch.zeros(len(queries), dtype=torch.int64, device=queries.device)
    hit = torch.zeros(len(centres), dtype=torch.bool, device=queries.device)
    for rows, d in distance_chunks(queries, centres, budget):
        inside = d <= radii[None, :]  # [b, N]
        counts[rows] = inside.sum(1)
        hit |= inside.any(0)
    return counts, hit


def nearest(
    queries: torch.Tensor, refs: torch.Tensor | Iterable[torch.Tensor], budget: int = BUDGET,
    rows: Callable[[torch.Tensor], torch.Tensor] = lambda r: r,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [M], index [M]) of each query's nearest ref row.

    `refs` is one tensor [N, ...] or its blocks in order (a training split read from disk a record batch at a time).
    They are walked in chunks (a chunk's distances and rows at most `budget` numbers at once), each made into rows by
    `rows` only then: a large reference set can stay as it is stored (uint8 images, say) instead of becoming one float
    copy, or need not be in memory at all. The search uses cdist's fast matrix-product form; each chunk's winner's
    distance is then recomputed as ||q - r|| directly, so an exact copy reads 0 rather than the product form's
    rounding noise. Between refs at equal distance (duplicates) the first one wins.
    """
    best = torch.full((len(queries),), torch.inf, dtype=queries.dtype, device=queries.device)
    index = torch.zeros(len(queries), dtype=torch.int64, device=queries.device)
    offset = 0
    for block in [refs] if isinstance(refs, torch.Tensor) else refs:
        step = max(1, budget // (len(queries) + block[0].numel())) if len(block) else 1
        for start in range(0, len(block), step):
            chunk = rows(block[start : start + step])
            where = torch.cdist(queries, chunk).argmin(1)
            value = (queries - chunk[where]).norm(dim=1)
            better = value < best
            best[better], index[better] = value[better], where[better] + offset + start
        offset += len(block)
    if not offset:
        raise ValueError("nearest neighbours among no reference rows")
    return best, index
