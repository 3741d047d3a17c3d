"""Adaptive discriminator augmentation's controller (Karras et al. 2020): the augmentation probability p, moved after
every few steps by the sign of D's outputs on real images, r_t = E[sign(D(x))], towards a target (0.6 in the paper).

A discriminator that overfits a small training set grows confident on its real images (r_t -> 1): p rises, D sees more
augmented images and cannot memorise them; when r_t falls below the target p falls. p lives in the training state, so a
resumed run goes on with its p (and the last interval of each epoch is closed at the epoch's end: a checkpoint never
holds half an interval). The augmentations themselves are `gan.augment.ada_augment`, applied in `GANLoss.run_D`.
"""

import torch

from gan import distributed
from gan.config import RegConfig
from gan.loss import GANLoss
from gan.state import TrainingState


class ADA:
    """Adjusts `s.ada_p` every reg.ada_interval steps from the `ada_sign` stats of the D phases since the last change, by
    sign(r_t - target) x (images in the interval) / reg.ada_images: p can go from 0 to 1 in ada_images images."""

    def __init__(self, s: TrainingState, reg: RegConfig, loss: GANLoss, batch: int, ctx: distributed.WorkerContext):
        self.s, self.reg, self.loss, self.batch, self.ctx = s, reg, loss, batch, ctx
        self.signs, self.steps = torch.zeros(()), 0  # the interval's sum of per-step mean signs, and its step count

    def before_step(self) -> None:
        """Hand the loss this step's p (a rollback may have restored an older one)."""
        self.loss.ada_p = self.s.ada_p

    def after_step(self, stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Count the step's real-image signs; close the interval when due. Returns the stats to log (p, r_t when closed)."""
        if "ada_sign" in stats:
            self.signs, self.steps = self.signs.to(stats["ada_sign"].device) + stats["ada_sign"], self.steps + 1
        return self.close() if self.steps >= self.reg.ada_interval else {}

    def close(self) -> dict[str, torch.Tensor]:
        """End the interval: r_t over every rank (one all-reduce, one host sync), p moved by its sign, clipped to [0, 1]."""
        if not self.steps:
            return {}
        rt, steps = distributed.mean([float(self.signs) / self.steps], self.ctx)[0], self.steps
        images = self.batch * self.ctx.world_size * steps
        direction = (rt > self.reg.ada_target) - (rt < self.reg.ada_target)
        self.s.ada_p = min(1.0, max(0.0, self.s.ada_p + direction * images / self.reg.ada_images))
        self.signs, self.steps = torch.zeros(()), 0
        self.before_step()
        return {"ada_p": torch.tensor(self.s.ada_p), "ada_rt": torch.tensor(rt)}
