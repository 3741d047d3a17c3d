"""Regularisers: small pure functions returning a penalty (or acting on weights), applied by `gan.loss`.

Gradient penalties take D's logits and the input tensor they came from (which requires grad), so the
forward pass stays wherever the caller runs it (through the DDP wrapper, under augmentation).
"""

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


def input_gradient(logits: Tensor, inputs: Tensor) -> Tensor:
    """d(sum of logits)/d(inputs), kept in the graph so a penalty on it trains D: [N, ...]."""
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad


def r1_penalty(real_logits: Tensor, real: Tensor) -> Tensor:
    """E |grad_x D(x)|^2 on real images (Mescheder et al. 2018); zero where D is flat around the data."""
    return input_gradient(real_logits, real).square().flatten(1).sum(1).mean()


def interpolation_weights(real: Tensor, gen: torch.Generator | None = None) -> Tensor:
    """One uniform weight in [0, 1) per sample of `real`, shaped [N, 1, ...] to broadcast over it, for `interpolates`."""
    return torch.rand(len(real), *([1] * (real.dim() - 1)), generator=gen, device=real.device)


def interpolates(real: Tensor, fake: Tensor, alpha: Tensor) -> Tensor:
    """Points on straight lines between paired real and fake samples, at the weights `alpha` (`interpolation_weights`:
    uniformly placed, Gulrajani et al. 2017)."""
    return (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)


def gradient_penalty(interp_logits: Tensor, interp: Tensor) -> Tensor:
    """Two-sided penalty E (|grad D(x_hat)| - 1)^2 on interpolates: pushes D's gradient norm to 1."""
    norms = input_gradient(interp_logits, interp).flatten(1).norm(dim=1)
    return (norms - 1).square().mean()


def feature_matching(real_features: Tensor, fake_features: Tensor) -> Tensor:
    """|E f(x) - E f(G(z))|^2 on D's last hidden layer, averaged over its dimensions (Salimans et al. 2016)."""
    return (real_features.mean(0) - fake_features.mean(0)).square().mean()


def info_loss(q: Tensor, categorical: Tensor | None, continuous: Tensor | None, num_categorical: int) -> Tensor:
    """InfoGAN's variational bound on -I(c; G(z, c)), up to constants: cross-entropy of the categorical
    code plus 0.1 x a unit-variance Gaussian log-likelihood of the continuous codes (Chen et al. 2016)."""
    loss = q.new_zeros(())
    if categorical is not None:
        loss = loss + F.cross_entropy(q[:, :num_categorical], categorical)
    if continuous is not None:
        loss = loss + 0.1 * 0.5 * (q[:, num_categorical:] - continuous).square().sum(1).mean()
    return loss


@torch.no_grad()
def clip_weights(module: nn.Module, bound: float) -> None:
    """WGAN's crude Lipschitz constraint: every weight clamped to [-bound, bound] (Arjovsky et al. 2017)."""
    for p in module.parameters():
        p.clamp_(-bound, bound)


def instance_noise_std(initial: float, progress: float, anneal: float) -> float:
    """Noise std at `progress` (share of training done): linear from `initial` to 0 at `anneal` (Sonderby et al. 2016)."""
    return initial * max(0.0, 1.0 - progress / anneal)
