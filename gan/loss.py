"""The loss object: runs G and D for one training phase and accumulates that phase's gradients.

Phases (as in stylegan2-ada's `training/loss.py`): 'D' (the adversarial D loss, with the gradient
penalty and the InfoGAN term when configured), 'Dreg' (lazy R1 on real images) and 'G'. Augmentation,
instance noise, the class input c and the choice of DDP-wrapped or bare module live in `run_G` and
`run_D` only; the objective comes from the `LOSSES` table. No optimiser is stepped here. A phase's draws
from the run's latent generator (`draw`) are made before its forward, so a captured step (gan/capture.py)
takes them as inputs like the batch.
"""

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from gan import regularizers as R
from gan.augment import ada_augment, diff_augment
from gan.config import Recipe, policy
from gan.latent import Latent
from gan.networks import DOut
from gan.objectives import LOSSES

Tensor = torch.Tensor


class GANLoss:
    def __init__(
        self, recipe: Recipe, latent: Latent, G: nn.Module, D: nn.Module, G_plain: nn.Module, D_plain: nn.Module,
        scalers: dict[str, torch.amp.GradScaler] | None = None,
    ):
        """G and D may be DDP-wrapped; G_plain and D_plain are the bare modules underneath. `scalers` ('G', 'D'):
        fp16's loss scales, which every backward goes through (a disabled scaler passes the loss as it is)."""
        self.train, self.reg = recipe.train, recipe.reg
        self.objective = LOSSES[recipe.train.loss]
        self.latent, self.policy = latent, policy(recipe.reg.diffaugment)
        assert recipe.reg.ada != "auto", "reg.ada 'auto' is made concrete (gan.recommended.for_data) before the loss is built"
        self.ada, self.ada_p = recipe.reg.ada, 0.0  # p: set by gan.ada's controller before each step
        self.G, self.D, self.G_plain, self.D_plain = G, D, G_plain, D_plain
        self.scalers = scalers or {}

    def autocast(self, device: torch.device) -> AbstractContextManager:
        """bf16 or fp16 autocast around a network's forward (train.precision); objectives and penalties stay float32.
        No cast cache: each forward casts each weight once anyway, and a CUDA graph capture must not keep one."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.train.precision)
        return torch.autocast(device.type, dtype=dtype, cache_enabled=False) if dtype is not None else nullcontext()

    def backward(self, net: str, loss: Tensor) -> None:
        scaler = self.scalers.get(net)
        (loss if scaler is None else scaler.scale(loss)).backward()

    def run_G(self, z: Tensor, c: Tensor | None, ddp: bool = True) -> Tensor:
        with self.autocast(z.device):
            return (self.G if ddp else self.G_plain)(z, c).float()

    def run_D(self, x: Tensor, c: Tensor | None, progress: float, ddp: bool = True) -> DOut:
        """D's view of a batch: DiffAugment or ADA, then instance noise, then D (DDP-wrapped or bare)."""
        if self.policy and x.dim() == 4:
            x = diff_augment(x, self.policy)
        if self.ada and x.dim() == 4:
            x = ada_augment(x, self.ada_p)
        noise = R.instance_noise_std(self.reg.instance_noise, progress, self.reg.instance_noise_anneal)
        if noise > 0:
            x = x + noise * torch.randn_like(x)
        with self.autocast(x.device):
            out = (self.D if ddp else self.D_plain)(x, c)
        return DOut(*(t if t is None else t.float() for t in out))

    def draw(self, phase: str, real: Tensor, labels: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        """The phase's draws from the run's latent generator, in the order its phase used to make them: latents z [N, dim]
        for a batch the size of `real` ('D', 'G'), with c [N] for conditional models (the real batch's labels: the
        data's class mix), then wgan-gp's interpolation weights alpha [N, 1, ...] ('D'); none for 'Dreg'."""
        if phase == "Dreg":
            return {}
        z, c = self.latent.sample(len(real), gen, real.device, labels=labels)
        draws = {"z": z} if c is None else {"z": z, "c": c}
        if phase == "D" and self.objective.lipschitz == "gp":
            draws["alpha"] = R.interpolation_weights(real, gen)
        return draws

    def accumulate_gradients(self, phase: str, real: Tensor, labels: Tensor, draws: dict[str, Tensor], progress: float) -> dict[str, Tensor]:
        """Forward and backward of one phase on a real batch [N, ...] with its labels [N] and its `draw`; returns detached stats."""
        return {"D": self._d_main, "Dreg": self._d_reg, "G": self._g_main}[phase](real, labels, draws, progress)

    def _d_main(self, real: Tensor, labels: Tensor, draws: dict[str, Tensor], progress: float) -> dict[str, Tensor]:
        n = len(real)
        z, c = draws["z"], draws.get("c")
        # Fakes from the bare G without a graph: a DDP forward with no backward would leave DDP waiting.
        with torch.no_grad():
            fake = self.run_G(z, c, ddp=False)
        # One D forward for everything D judges in this phase, so a DDP-wrapped D sees one forward per backward.
        batch, parts = [real, fake], [n, n]
        if self.objective.lipschitz == "gp":
            interp = R.interpolates(real, fake, draws["alpha"])
            batch, parts = [real, fake, interp], [n, n, n]
        cs = None if c is None else torch.cat([labels, c] + ([labels] if len(parts) == 3 else []))
        out = self.run_D(torch.cat(batch), cs, progress)
        real_logits, fake_logits, *rest = out.logits.split(parts)
        loss = self.objective.d_loss(real_logits, fake_logits, self.reg.label_smoothing)
        stats = {"loss_d": loss, **self.objective.stats(real_logits, fake_logits)}
        if self.ada:  # ADA's overfitting heuristic r_t reads the sign of D's outputs on (augmented) real images
            stats["ada_sign"] = real_logits.detach().sign().mean()
        if self.objective.lipschitz == "gp":
            penalty = R.gradient_penalty(rest[0], interp)
            loss = loss + self.train.gp_weight * penalty
            stats["gp"] = penalty
        if out.q is not None:  # Q learns to recover the codes of the fakes
            info = R.info_loss(out.q[n : 2 * n], *self.latent.codes(z), self.latent.info_categorical)
            loss = loss + self.reg.info_weight * info
            stats["info_d"] = info
        self.backward("D", loss)
        return {k: v.detach() for k, v in stats.items()}

    def _d_reg(self, real: Tensor, labels: Tensor, draws: dict[str, Tensor], progress: float) -> dict[str, Tensor]:
        """Lazy R1: gamma/2 * E|grad D(x)|^2, applied every r1_every steps and weighted by r1_every (Karras et al. 2020)."""
        real = real.detach().requires_grad_(True)
        out = self.run_D(real, labels if self.latent.num_classes else None, progress)
        penalty = R.r1_penalty(out.logits, real)
        loss = penalty * (self.reg.r1_gamma / 2) * self.reg.r1_every
        # DDP expects a gradient for every parameter: the output bias (absent from grad_x D) and the Q head's too
        loss = loss + 0 * out.logits.sum()
        if out.q is not None:
            loss = loss + 0 * out.q.sum()
        self.backward("D", loss)
        return {"r1": penalty.detach()}

    def _g_main(self, real: Tensor, labels: Tensor, draws: dict[str, Tensor], progress: float) -> dict[str, Tensor]:
        z, c = draws["z"], draws.get("c")
        fake = self.run_G(z, c)
        # Gradients flow through the bare, frozen D: none computed for D's weights, none all-reduced.
        self.D_plain.requires_grad_(False)
        try:
            out = self.run_D(fake, c, progress, ddp=False)
            loss = self.objective.g_loss(out.logits)
            stats = {"loss_g": loss}
            if self.reg.feature_matching:
                with torch.no_grad():
                    real_features = self.run_D(real, c, progress, ddp=False).features
                matching = R.feature_matching(real_features, out.features)
                loss = loss + self.reg.feature_matching * matching
                stats["feature_matching"] = matching
            if out.q is not None:  # G learns to make its codes recoverable
                info = R.info_loss(out.q, *self.latent.codes(z), self.latent.info_categorical)
                loss = loss + self.reg.info_weight * info
                stats["info_g"] = info
            self.backward("G", loss)
        finally:
            self.D_plain.requires_grad_(True)
        return {k: v.detach() for k, v in stats.items()}
