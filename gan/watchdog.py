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

import copy
import math

import torch
from torch import nn

from gan.config import TrainConfig
from gan.objectives import LOSSES, probability_stats
from gan.state import TrainingState

ROLLBACK, D_WINS, COLLAPSE, CLEARED = "rollback", "d_wins", "collapse", "collapse_cleared"


class TrainingDiverged(RuntimeError):
    """Training kept producing non-finite numbers after every allowed rollback."""


def nonfinite(stats: dict[str, float], nets: dict[str, nn.Module], gradients: bool = True) -> str | None:
    """The first non-finite epoch statistic, gradient (with `gradients`) or weight, named; None when all are finite."""
    for key, value in stats.items():
        if not math.isfinite(value):
            return f"{key} = {value}"
    for name, net in nets.items():
        for pname, p in net.named_parameters():
            if not torch.isfinite(p).all():
                return f"weight {name}.{pname} is not finite"
            if gradients and p.grad is not None and not torch.isfinite(p.grad).all():
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



class Watchdog:
    """The loop's side of the checks: the last good state (rolled back to on non-finite numbers), the real images'
    diversity (the collapse check's reference, rank 0) and the run of epochs the discriminator won outright."""

    def __init__(self, s: TrainingState, t: TrainConfig) -> None:
        self.s, self.t, self.good, self.real_diversity, self.d_wins_streak = s, t, None, None, 0

    def see_real(self, real: torch.Tensor) -> None:
        """Rank 0, the first batch: the real images' diversity, in the units the samples are measured in."""
        if self.real_diversity is None and len(real) > 1:
            self.real_diversity = diversity(real[: self.t.num_sample_images])

    def problem(self, metrics: dict[str, float]) -> str | None:
        """Every rank, at an epoch's end: its own non-finite number, named. Not fp16's gradients: an overflowed step
        (the last of an epoch too) leaves inf gradients that its loss scaler skipped and scaled down for; expected."""
        return nonfinite(metrics, {"G": self.s.G, "D": self.s.D}, gradients=self.t.precision != "fp16")

    def roll_back(self, problem: str) -> None:
        """Restore the last good state with halved learning rates, keeping the clock, the epoch log, the events and the
        time budget's plan."""
        s, done = self.s, rollbacks(self.s.events)
        if done >= self.t.max_rollbacks:
            raise TrainingDiverged(
                f"training diverged at step {s.step} (epoch {s.epoch}): {problem}; still after {done} rollbacks with halved "
                "learning rates (train.max_rollbacks)"
            )
        kept = s.train_seconds, s.epoch_log, s.history, s.lr_scale * 0.5, s.epochs_planned
        event = {"epoch": s.epoch, "step": s.step, "kind": ROLLBACK, "detail": f"{problem}; back to epoch {self.good['epoch']}, learning rates x{kept[3]:g}"}
        events = [*s.events, event]
        s.load_state_dict(copy.deepcopy(self.good))  # an optimiser keeps the tensors it loads: training on must not change `good`
        s.train_seconds, s.epoch_log, s.history, s.lr_scale, s.epochs_planned = kept
        self.d_wins_streak = 0  # the epochs it counted were rolled back
        s.events = events
        s.history.append({"step": s.step, "watchdog_rollbacks": float(done + 1)})
        print(f"[watchdog] step {event['step']}: {event['detail']}", flush=True)

    def watch_balance(self, metrics: dict[str, float], is_main: bool) -> None:
        """After a healthy epoch: the D-wins streak (an event when it reaches `d_wins_epochs`) and the rollback count."""
        s, t = self.s, self.t
        self.d_wins_streak = self.d_wins_streak + 1 if d_wins(t, metrics) else 0
        if self.d_wins_streak == t.d_wins_epochs and is_main:
            detail = f"D(x) {metrics['d_real']:.3f}, D(G(z)) {metrics['d_fake']:.3f} for {self.d_wins_streak} epochs"
            s.events.append({"epoch": s.epoch, "step": s.step, "kind": D_WINS, "detail": detail})
            print(f"[watchdog] epoch {s.epoch}: the discriminator wins outright: {detail}", flush=True)
        metrics["watchdog_rollbacks"] = float(rollbacks(s.events))

    def check_samples(self, samples: torch.Tensor) -> None:
        """Rank 0, at checkpoints: the fixed-latent samples' diversity against the real images'; collapse is an event."""
        s, t, reference = self.s, self.t, self.real_diversity
        if not (t.watchdog and t.collapse_ratio and reference and len(samples) > 1 and s.step >= t.collapse_min_steps):
            return
        ratio = diversity(samples) / reference
        s.history.append({"step": s.step, "sample_diversity_ratio": ratio})
        collapsed = ratio < t.collapse_ratio
        if collapsed or verdict(s.events):  # a collapse, or the first healthy check after one
            detail = f"sample diversity {ratio:.3f} x the real images' (train.collapse_ratio {t.collapse_ratio})"
            s.events.append({"epoch": s.epoch, "step": s.step, "kind": COLLAPSE if collapsed else CLEARED, "detail": detail})
            print(f"[watchdog] epoch {s.epoch}: {'samples collapsed' if collapsed else 'collapse cleared'}: {detail}", flush=True)

    def keep(self) -> None:
        """At the start and at every checkpoint: this state is the one to roll back to."""
        self.good = copy.deepcopy(self.s.state_dict())
