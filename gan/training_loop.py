"""The per-worker GAN training loop. Runs in one plain process or as one rank of a DDP group.

Tracking stays outside: the loop hands numbers, sample images and checkpoint state to a `Sink`.
"""

import copy
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from gan import distributed
from gan.checkpoint import history_of
from gan.config import ModelConfig, TrainConfig
from gan.losses import discriminator_loss, generator_loss
from gan.networks import build_discriminator, build_generator


class Sink(Protocol):
    """Where the loop's outputs go. Every rank calls `epoch_end` once per epoch (Ray Train needs that)."""

    def log(self, step: int, stats: dict[str, float]) -> None: ...

    def samples(self, step: int, images: torch.Tensor) -> None: ...

    def epoch_end(self, epoch: int, metrics: dict[str, float], state: Callable[[], dict] | None) -> None: ...


def ema_beta(decay: float, step: int) -> float:
    """EMA decay ramped up over the first steps, so the average does not remember the random init."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):  # BatchNorm running statistics
        b_ema.copy_(b)


def train_step(
    G: nn.Module, D: nn.Module, G_plain: nn.Module, D_plain: nn.Module,
    opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer,
    real: torch.Tensor, z_dim: int, gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """One D step then one G step. G and D may be DDP-wrapped; *_plain are the bare modules."""
    n = len(real)
    # D phase. Fakes come from the bare G under no_grad: a DDP forward with no backward would
    # leave DDP waiting for gradients that never come.
    with torch.no_grad():
        fake = G_plain(torch.randn(n, z_dim, generator=gen, device=real.device))
    loss_d, stats = discriminator_loss(D, real, fake)
    opt_D.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_D.step()

    # G phase. Gradients flow through the bare, frozen D: no D gradients computed or all-reduced.
    D_plain.requires_grad_(False)
    loss_g, stats_g = generator_loss(D_plain, G(torch.randn(n, z_dim, generator=gen, device=real.device)))
    opt_G.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_G.step()
    D_plain.requires_grad_(True)
    return {**stats, **stats_g}


@torch.no_grad()
def generate(G: nn.Module, z: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Images [N, C, H, W] in [0, 1] from latents [N, z_dim], in eval mode, in chunks."""
    was_training = G.training
    G.eval()
    out = torch.cat([G(chunk) for chunk in z.split(batch_size)])
    G.train(was_training)
    return out


def fixed_latents(seed: int, count: int, z_dim: int) -> torch.Tensor:
    """The latent batch every sample grid is drawn from, the same on every rank and every resume."""
    return torch.randn(count, z_dim, generator=torch.Generator().manual_seed(seed))


def in_memory_batches(images: np.ndarray, batch_size: int, seed: int, rank: int = 0) -> Callable[[int], Iterable[torch.Tensor]]:
    """Batches of a uint8 array [N, C, H, W], reshuffled each epoch; for single-process runs and tests."""
    data = torch.from_numpy(np.ascontiguousarray(images))

    def epoch_batches(epoch: int) -> Iterable[torch.Tensor]:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(distributed.rank_seed(seed, rank, epoch)))
        for start in range(0, len(data) - batch_size + 1, batch_size):  # drop the last, short batch
            yield data[order[start : start + batch_size]]

    return epoch_batches


@dataclass
class Models:
    """Everything that learns: G, D, the EMA copy of G, and both optimizers."""

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer

    def parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema, "opt_G": self.opt_G, "opt_D": self.opt_D}


def build_models(model_cfg: ModelConfig, train_cfg: TrainConfig, image_shape: tuple[int, ...], device: torch.device) -> Models:
    """Fresh networks and Adam optimizers. Seeded identically on every rank (DDP also broadcasts rank 0's)."""
    torch.manual_seed(train_cfg.seed)
    G = build_generator(model_cfg, image_shape).to(device)
    D = build_discriminator(model_cfg, image_shape).to(device)
    betas = (train_cfg.beta1, train_cfg.beta2)
    return Models(
        G, D, copy.deepcopy(G).eval().requires_grad_(False),
        torch.optim.Adam(G.parameters(), lr=train_cfg.lr_g, betas=betas),
        torch.optim.Adam(D.parameters(), lr=train_cfg.lr_d, betas=betas),
    )


def epoch_summary(epoch: int, step: int, sums: dict[str, torch.Tensor], steps: int, per_rank: list[float], seconds: float) -> dict[str, float]:
    """Mean stats of one epoch, overall throughput and every rank's image count."""
    return {
        "epoch": epoch, "step": step, "images_per_sec": sum(per_rank) / max(seconds, 1e-9),
        **{k: float(v) / steps for k, v in sums.items()},
        **{f"images_rank{r}": n for r, n in enumerate(per_rank)},
    }


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    image_shape: tuple[int, ...],
    epoch_batches: Callable[[int], Iterable[torch.Tensor]],
    sink: Sink,
    ctx: distributed.WorkerContext = distributed.WorkerContext(),
    resume: dict | None = None,
    config_snapshot: dict | None = None,
) -> dict[str, float]:
    """Train G and D for `train_cfg.epochs` epochs, resuming from a checkpoint state if given."""
    device = ctx.device
    # 1. Models, then the resumed state if any.
    m = build_models(model_cfg, train_cfg, image_shape, device)
    step, epoch, history = 0, 0, []
    if resume is not None:
        assert tuple(resume["image_shape"]) == tuple(image_shape), f"checkpoint image shape {resume['image_shape']} != data {image_shape}"
        for key, part in m.parts().items():
            part.load_state_dict(resume[key])
        step, epoch, history = int(resume["step"]), int(resume["epoch"]), history_of(resume)
        torch.set_rng_state(resume["rng"]["torch"])
        if ctx.is_main:
            print(f"[train] resumed from epoch {epoch}, step {step}", flush=True)

    # 2. DDP, in this one block; m.G and m.D stay the plain modules underneath.
    G_ddp, D_ddp = distributed.wrap(m.G, ctx), distributed.wrap(m.D, ctx)
    z_fixed = fixed_latents(train_cfg.seed, train_cfg.num_sample_images, model_cfg.z_dim).to(device)

    def state() -> dict:
        return {
            **{key: part.state_dict() for key, part in m.parts().items()},
            "step": step, "epoch": epoch, "rng": {"torch": torch.get_rng_state(), "seed": train_cfg.seed},
            "config_json": json.dumps(config_snapshot or {"model": model_cfg.model_dump(), "train": train_cfg.model_dump()}),
            "image_shape": list(image_shape), "history_json": json.dumps(history),
        }

    # 3. Epochs. Latents come from a per-(rank, epoch) generator, so a resumed run redraws the same ones.
    #    Stats stay tensors between log steps: no device sync per step.
    metrics: dict[str, float] = {}
    while epoch < train_cfg.epochs:
        gen = torch.Generator(device=device).manual_seed(distributed.rank_seed(train_cfg.seed, ctx.rank, epoch))
        torch.manual_seed(distributed.rank_seed(train_cfg.seed, ctx.rank, epoch) + 1)  # dropout
        sums, images_seen, steps_in_epoch, started = defaultdict(float), 0, 0, time.perf_counter()
        for batch in epoch_batches(epoch):
            real = batch.to(device, non_blocking=True).float().div_(255.0)  # [N, C, H, W] in [0, 1]
            stats = train_step(G_ddp, D_ddp, m.G, m.D, m.opt_G, m.opt_D, real, model_cfg.z_dim, gen)
            update_ema(m.G_ema, m.G, ema_beta(train_cfg.ema_decay, step))
            step, steps_in_epoch, images_seen = step + 1, steps_in_epoch + 1, images_seen + len(real)
            for k, v in stats.items():
                sums[k] = sums[k] + v
            if step % train_cfg.log_every_steps == 0 and ctx.is_main:
                values = {k: float(v) for k, v in stats.items()}
                history.append({"step": step, **values})
                sink.log(step, values)
            if step % train_cfg.sample_every_steps == 0 and ctx.is_main:
                sink.samples(step, generate(m.G_ema, z_fixed))
        epoch += 1
        per_rank = distributed.gather(images_seen, ctx)
        assert min(per_rank) > 0, f"a rank saw no data in epoch {epoch}: images per rank {per_rank} (batch larger than a shard?)"
        metrics = epoch_summary(epoch, step, sums, steps_in_epoch, per_rank, time.perf_counter() - started)
        if ctx.is_main:
            print(
                f"[train] epoch {epoch}/{train_cfg.epochs} step {step} loss_d {metrics['loss_d']:.3f} "
                f"loss_g {metrics['loss_g']:.3f} D(x) {metrics['d_real']:.2f} D(G(z)) {metrics['d_fake']:.2f} "
                f"{metrics['images_per_sec']:.0f} img/s",
                flush=True,
            )
        due = epoch % train_cfg.checkpoint_every_epochs == 0 or epoch == train_cfg.epochs
        if due and ctx.is_main:
            sink.samples(step, generate(m.G_ema, z_fixed))
        sink.epoch_end(epoch, metrics, state if due else None)
    return metrics
