"""Metrics by name: every metric module registers its metric here, and the evaluation (gan/metrics/evaluation.py) runs
the ones it is asked for by name, on the generated images and on the held-out ones alike.

A registered metric is `fn(real, fake, **options) -> dict[str, float]`: `real` is the reference (the training images),
`fake` the set being scored, each as the metric reads it (features [N, D] for most), and the dict's keys name what it
returns. Its entry also says what of the two sets the evaluation hands it, with which options, and how a summary shows it.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Features = np.ndarray | torch.Tensor  # [N, D]
Metric = Callable[..., dict[str, float]]


@dataclass(frozen=True)
class Context:
    """What one evaluation tells its metrics besides the two sets; each entry's `options` take what they need of it."""

    seed: int = 0  # eval.seed: every seeded draw of a metric (bootstrap, KID subsets, the k-NN metrics' reference rows)
    min_fraction: float = 0.01  # eval.coverage_min_fraction: a class counts as covered from this share of the set
    kid_scale: float = 1.0  # KID divides both sets by it: the reference's root mean square, or 1 (see evaluation.Reference)


@dataclass(frozen=True)
class Shown:
    """One number of a metric as a summary shows it: 'FID 4.12 ± 0.30 (floor 1.30 ± 0.10)'."""

    label: str
    key: str  # its key in the metric's dict
    spec: str = ".2f"  # its format
    std: str | None = None  # the key of its spread, if it has one


@dataclass(frozen=True)
class Entry:
    """A registered metric and how the evaluation runs it."""

    fn: Metric
    # What it reads of the reference and of the scored set: attribute names of evaluation.Reference (None: nothing) and
    # evaluation.Embedded. None: not scored set by set (memorisation, which the evaluation runs on its own).
    reads: tuple[str | None, str] | None
    options: Callable[[Context], dict[str, object]]
    shown: tuple[Shown, ...]


METRICS: dict[str, Entry] = {}


def register(
    name: str, *, reads: tuple[str | None, str] | None = ("feats", "feats"),
    options: Callable[[Context], dict[str, object]] = lambda context: {}, shown: tuple[Shown, ...] = (),
) -> Callable[[Metric], Metric]:
    """Decorator: add a metric function to METRICS under `name`, with what the evaluation hands it and how it is shown."""

    def add(fn: Metric) -> Metric:
        assert name not in METRICS, f"metric {name!r} registered twice"
        METRICS[name] = Entry(fn, reads, options, shown)
        return fn

    return add


def entry(name: str) -> Entry:
    """The entry registered as `name`; a ValueError naming the known ones otherwise."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def compute(name: str, real: Features, fake: Features, **options: object) -> dict[str, float]:
    """Run the metric registered as `name`."""
    return entry(name).fn(real, fake, **options)
