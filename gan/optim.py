"""Optimisers, learning-rate schedules and the per-step gradient treatments (L1 penalty, norm clipping)."""

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from gan.config import OptimConfig


def build_optimizer(
    cfg: OptimConfig, params: Iterable[nn.Parameter], lr: float, weight_decay: float, fused: bool = False, ratio: float = 1.0,
) -> torch.optim.Optimizer:
    """Adam (beta1, beta2) or RMSprop (alpha = beta2). `weight_decay` is the coupled L2 penalty: wd * w joins the gradient.
    `fused`: one kernel per step for all parameters (GPUs; on CPUs the per-tensor loop is as fast for small nets).
    `ratio`: a lazy regulariser's correction (`lazy_ratio`): the betas become beta ** ratio (the learning rate is the
    caller's, scaled by the same ratio)."""
    beta1, beta2 = cfg.beta1**ratio, cfg.beta2**ratio
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=beta2, weight_decay=weight_decay, foreach=fused or None)
    return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, fused=fused or None)


def lazy_ratio(every: int) -> float:
    """A network regularised lazily, every k-th step as an extra optimiser step, takes k + 1 steps where k were meant: its
    learning rate and its betas' exponent are scaled by k / (k + 1), so the moments and the distance travelled per k
    minibatches stay those of k plain steps (Karras et al. 2020, StyleGAN2's `mb_ratio`). 1 for a regulariser every step."""
    return every / (every + 1) if every > 1 else 1.0


def _step(cfg: OptimConfig, progress: float) -> float:
    return cfg.step_gamma ** math.floor(progress / cfg.step_every + 1e-9)


def _linear(cfg: OptimConfig, progress: float) -> float:
    return 1.0 if progress < cfg.decay_start else max(0.0, 1.0 - (progress - cfg.decay_start) / (1.0 - cfg.decay_start))


SCHEDULES: dict[str, Callable[[OptimConfig, float], float]] = {
    "constant": lambda cfg, progress: 1.0,
    "step": _step,
    "linear": _linear,
    "cosine": lambda cfg, progress: 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))),
}


def lr_factor(cfg: OptimConfig, progress: float) -> float:
    """Multiplier of the base learning rate when `progress` (share of training done, 0..1) is behind us."""
    return SCHEDULES[cfg.schedule](cfg, progress)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Every group's learning rate; a tensor one is filled in place, where a captured step reads it (`capture_ready`)."""
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def capture_ready(opt: torch.optim.Optimizer, device: torch.device, capture: bool) -> None:
    """With `capture`, an optimiser whose step can be replayed from a CUDA graph: its learning rate a tensor on the device
    (a Python float would be frozen into the graph; `set_lr` fills the tensor), `capturable` on CUDA (step counts stay on
    the device and no step reads one back). Without, the plain float learning rate again (a captured run's checkpoint
    resumed uncaptured). CUDA's fused kernels read a tensor learning rate as float32 where an eager step passes a double:
    the one difference between a captured and an eager CUDA step (the rate rounded, relative error below 6e-8). On a CPU
    it is float64, which keeps the CPU stand-in's arithmetic bit for bit the eager step's."""
    cuda = device.type == "cuda"
    for group in opt.param_groups:
        lr = float(group["lr"])  # a host read, once per set-up (and per watchdog rollback)
        group["lr"] = torch.tensor(lr, dtype=torch.float32 if cuda else torch.float64, device=device) if capture else lr
        group["capturable"] = capture and cuda
    for state in opt.state.values() if capture and cuda else ():
        if isinstance(state.get("step"), torch.Tensor):  # on the host when an uncaptured, unfused run saved it
            state["step"] = state["step"].to(device, torch.float32)


@torch.no_grad()
def add_l1_gradient(module: nn.Module, weight: float) -> None:
    """The subgradient of weight * sum |w|, added to every parameter's gradient."""
    for p in module.parameters():
        if p.grad is not None:
            p.grad.add_(torch.sign(p), alpha=weight)


def clip_gradient(module: nn.Module, max_norm: float) -> torch.Tensor:
    """Scale the gradient so its global L2 norm is at most max_norm; return the norm before clipping."""
    return nn.utils.clip_grad_norm_([p for p in module.parameters() if p.grad is not None], max_norm)


@contextmanager
def weight_decay_off(opt: torch.optim.Optimizer, off: bool = True) -> Iterator[None]:
    """Within the block, the optimiser's coupled weight decay is 0 (when `off`)."""
    saved = [group["weight_decay"] for group in opt.param_groups]
    if off:
        for group in opt.param_groups:
            group["weight_decay"] = 0.0
    try:
        yield
    finally:
        for group, decay in zip(opt.param_groups, saved):
            group["weight_decay"] = decay
