"""The generator's exponential moving average: weights averaged over G steps, then BatchNorm statistics re-estimated for
the average (no training batch ever ran through it)."""

import json

import torch
from torch import nn

from gan import distributed
from gan.config import TrainConfig
from gan.latent import Latent
from gan.state import TrainingState

BN_BATCH = 256  # latents per batch when recomputing the EMA generator's BatchNorm statistics


def ema_g_steps(parent: dict) -> int:
    """The G steps a parent checkpoint state's EMA generator has averaged over: its own, and its own parents' (recorded
    since warm starts were); the EMA warm-up of a run warm-started from it goes on from there."""
    return int(parent.get("ema_g_steps", int(parent["step"]) // json.loads(parent["config_json"])["train"]["n_critic"]))


def ema_beta(decay: float, g_step: int, warmup: int = 10) -> float:
    """EMA decay ramped up over the first G steps, so the average does not remember the random init."""
    return min(decay, (1 + g_step) / (warmup + g_step))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """Average the weights only: BatchNorm statistics belong to weights, see `recompute_bn_stats`. One multi-tensor
    kernel on GPUs (a launch per weight otherwise); on CPUs the same per-tensor lerp, bit for bit."""
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - beta)


@torch.no_grad()
def recompute_bn_stats(G: nn.Module, latent: Latent, batches: int, seed: int, device: torch.device) -> None:
    """Re-estimate every BatchNorm's running statistics for G's own weights from fresh latents.

    The EMA generator's weights are an average no training batch ever ran through; the statistics of
    the live G belong to other weights. Seeded, so a resumed run recomputes the same numbers.
    """
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    gen = torch.Generator().manual_seed(seed)
    G.train()
    for _ in range(batches):
        z, c = latent.sample(BN_BATCH, gen)
        G(z.to(device), None if c is None else c.to(device))
    G.eval()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


class EMA:
    """The training state's EMA generator as the loop keeps it: updated after every G step, over a horizon that goes on
    from `offset` G steps (a warm start's parent's), and read with BatchNorm statistics for its current weights."""

    def __init__(self, s: TrainingState, t: TrainConfig, latent: Latent, device: torch.device, offset: int = 0) -> None:
        self.s, self.t, self.latent, self.device, self.offset, self.ready_at = s, t, latent, device, offset, -1

    def update(self) -> None:
        """After a G step (before the step counter moves on)."""
        update_ema(self.s.G_ema, self.s.G, ema_beta(self.t.ema_decay, self.offset + (self.s.step + 1) // self.t.n_critic, self.t.ema_warmup))

    def ready(self) -> nn.Module:
        """The EMA generator with BatchNorm statistics for its current weights (recomputed once per step at most)."""
        if self.ready_at != self.s.step:
            seed = distributed.rank_seed(self.t.seed, 0, self.s.step, distributed.BATCHNORM)
            recompute_bn_stats(self.s.G_ema, self.latent, self.t.ema_bn_batches, seed, self.device)
            self.ready_at = self.s.step
        return self.s.G_ema

    def g_steps(self) -> int:
        """The G steps the average spans, parents' included (kept in checkpoints as `ema_g_steps`)."""
        return self.offset + self.s.step // self.t.n_critic
