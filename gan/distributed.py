"""DDP plumbing, in one place: wrapping, per-rank seeds and cross-rank reductions.

Networks and losses never see any of this; with world_size 1 every helper is a no-op, so the
training loop runs unchanged in one plain process.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def wrap(module: nn.Module, ctx: WorkerContext) -> nn.Module:
    """DDP-wrap a module when there is more than one worker (DDP broadcasts rank 0's weights here)."""
    if ctx.world_size == 1:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


# Independent random streams per (seed, rank, epoch): the data order must not share its numbers with the latents.
DATA, LATENTS, NOISE, BATCHNORM, MIRROR = range(5)


def rank_seed(seed: int, rank: int, epoch: int, stream: int = DATA) -> int:
    """A well-mixed seed per (seed, rank, epoch, stream): ranks draw different latents, resumes redraw the same."""
    return int(np.random.SeedSequence([seed, rank, epoch, stream]).generate_state(1)[0])


def mean(values: list[float], ctx: WorkerContext) -> list[float]:
    """Each of `values` averaged over the ranks (every rank passes as many, in the same order), in one all-reduce."""
    if ctx.world_size == 1:
        return [float(v) for v in values]
    summed = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(summed)
    return (summed / ctx.world_size).tolist()


def gather(value: float, ctx: WorkerContext) -> list[float]:
    """Every rank's value of a scalar, in rank order."""
    if ctx.world_size == 1:
        return [float(value)]
    mine = torch.tensor([float(value)], device=ctx.device)
    out = [torch.zeros_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(out, mine)
    return [float(t.item()) for t in out]
