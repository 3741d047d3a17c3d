"""The loop's numbers: per-step stats kept as tensors (no device sync per step), averaged per log interval and per
epoch, and the epoch's summary line."""

from collections import defaultdict
from collections.abc import Iterable

import torch


class LogWindow:
    """Per-step stats as tensors, averaged over the epoch and over each log interval."""

    def __init__(self) -> None:
        self.epoch_sums, self.epoch_counts = defaultdict(float), defaultdict(int)
        self.sums, self.counts = defaultdict(float), defaultdict(int)

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            self.epoch_sums[k], self.epoch_counts[k] = self.epoch_sums[k] + v, self.epoch_counts[k] + 1
            self.sums[k], self.counts[k] = self.sums[k] + v, self.counts[k] + 1

    def epoch_means(self) -> dict[str, float]:
        """Every stat's mean over the epoch's steps that produced it, in the order the phases made them (the same on every rank)."""
        return {k: float(v) / self.epoch_counts[k] for k, v in self.epoch_sums.items()}

    def take(self) -> dict[str, float]:
        """Means since the last call: a stat of a phase that runs every k steps still appears at every log step."""
        means = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = defaultdict(float), defaultdict(int)
        return means


def epoch_summary(epoch: int, step: int, means: dict[str, float], per_rank: list[float], seconds: float) -> dict[str, float]:
    """The epoch's mean of every stat (over the ranks too), overall throughput and every rank's image count."""
    return {
        "epoch": epoch, "step": step, "images_per_sec": sum(per_rank) / max(seconds, 1e-9), **means,
        **{f"images_rank{r}": n for r, n in enumerate(per_rank)},
    }


def epoch_line(epochs: int, metrics: dict[str, float], stat_names: Iterable[str]) -> str:
    stats = " ".join(f"{k} {metrics[k]:.3f}" for k in stat_names)
    fid = f" quick FID {metrics['quick_fid']:.2f}" if "quick_fid" in metrics else ""
    return f"[train] epoch {metrics['epoch']}/{epochs} step {metrics['step']} {stats} {metrics['images_per_sec']:.0f} img/s{fid}"
