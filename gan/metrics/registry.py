"""Metrics by name: every two-set metric registers itself here, so an evaluation can be asked for one by name.

A registered metric is `fn(real [N, D], fake [M, D], **options) -> dict[str, float]`: `real` is the
reference set (the training features), `fake` the generated one, and the dict's keys name what it returns.
"""

from collections.abc import Callable

import numpy as np
import torch

Features = np.ndarray | torch.Tensor  # [N, D]
Metric = Callable[..., dict[str, float]]

METRICS: dict[str, Metric] = {}


def register(name: str) -> Callable[[Metric], Metric]:
    """Decorator: add a metric function to METRICS under `name`."""

    def add(fn: Metric) -> Metric:
        assert name not in METRICS, f"metric {name!r} registered twice"
        METRICS[name] = fn
        return fn

    return add


def compute(name: str, real: Features, fake: Features, **options: object) -> dict[str, float]:
    """Run the metric registered as `name`."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return METRICS[name](real, fake, **options)
