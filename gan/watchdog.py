"""The training watchdog: a run that went numerically wrong or stopped learning must never reach a registry.

Checked once per epoch (the loop makes every rank act alike):
- a non-finite loss, gradient or weight -> the loop restores the last good checkpoint state, halves the
  learning rates and goes on; after `max_rollbacks` it stops with `TrainingDiverged`, naming the step and
  the statistic;
- the discriminator winning outright (losses with probability outputs: mean D(G(z)) below `d_wins_fake`
  while mean D(x) is above `d_wins_real`, for `d_wins_epochs` epochs in a row) -> a warning and an event;
- sample collapse (the fixed-latent samples' mean pairwise distance below `collapse_ratio` x that of real
  images) -> a warning and an event; a run whose last check found collapse is refused by the registry.
Events live in the training state (`events`), so checkpoints, the evaluation and the registry see them.
"""

import math

import torch
from torch import nn

from gan.config import TrainConfig
from gan.objectives import LOSSES, probability_stats

ROLLBACK, D_WINS, COLLAPSE, CLEARED = "rollback", "d_wins", "collapse", "collapse_cleared"


class TrainingDiverged(RuntimeError):
    """Training kept producing non-finite numbers after every allowed rollback."""


def nonfinite(stats: dict[str, float], nets: dict[str, nn.Module]) -> str | None:
    """The first non-finite epoch statistic, gradient or weight, named; None when all are finite."""
    for key, value in stats.items():
        if not math.isfinite(value):
            return f"{key} = {value}"
    for name, net in nets.items():
        for pname, p in net.named_parameters():
            if not torch.isfinite(p).all():
                return f"weight {name}.{pname} is not finite"
            if p.grad is not None and not torch.isfinite(p.grad).all():
                return f"gradient of {name}.{pname} is not finite"
    return None


def d_wins(t: TrainConfig, stats: dict[str, float]) -> bool:
    """D winning outright this epoch; defined for the losses whose D outputs probabilities."""
    if LOSSES[t.loss].stats is not probability_stats or "d_real" not in stats:
        return False
    return stats["d_fake"] < t.d_wins_fake and stats["d_real"] > t.d_wins_real


def diversity(images: torch.Tensor) -> float:
    """Mean pairwise L2 distance of images [N, ...] (N >= 2), in their own units."""
    x = images.flatten(1).double()
    n = len(x)
    return float(torch.cdist(x, x).sum() / (n * (n - 1)))


def rollbacks(events: list[dict]) -> int:
    return sum(e["kind"] == ROLLBACK for e in events)


def inject_nan(D: nn.Module) -> None:
    """The test hook's effect: D's first weight turns NaN."""
    with torch.no_grad():
        next(D.parameters()).fill_(float("nan"))


def verdict(events: list[dict]) -> str | None:
    """Why a finished run must not be registered, or None. Collapse counts when the last collapse check found it."""
    checks = [e for e in events if e["kind"] in (COLLAPSE, CLEARED)]
    if checks and checks[-1]["kind"] == COLLAPSE:
        return f"the samples collapsed (epoch {checks[-1]['epoch']}: {checks[-1]['detail']})"
    return None


def class_collapse(effective: float, real_effective: float, ratio: float) -> str | None:
    """The evaluation's check, in the feature classifier's space: the samples' effective class count (see
    `metrics.effective_classes`) against the held-out real images'. None when healthy or when `ratio` is 0."""
    if ratio and effective < ratio * real_effective:
        return (f"the samples collapsed onto {effective:.2f} effective classes, the held-out real images spread over "
                f"{real_effective:.2f} (eval.collapse_ratio {ratio:g})")
    return None

