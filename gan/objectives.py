"""Adversarial objectives on logits, by name. Pure: tensors in, a scalar and stats out.

`d_loss(real, fake, smoothing)` and `g_loss(fake)` take D's logits [N]. The objective does not say how
D is kept Lipschitz: 'wgan' clips weights and 'wgan-gp' adds a gradient penalty (`gan.loss` applies
both, per `Objective.lipschitz`).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def bce_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    """-log D(x) - log(1 - D(G(z))) as softplus on logits; one-sided smoothing sets the real target to 1 - s."""
    real_term = (1 - smoothing) * F.softplus(-real) + smoothing * F.softplus(real)
    return real_term.mean() + F.softplus(fake).mean()


def minimax_g(fake: Tensor) -> Tensor:
    """The original, saturating G objective: minimise log(1 - D(G(z))) = -softplus(fake logit).

    Its gradient vanishes while D confidently rejects fakes, which is early in training."""
    return -F.softplus(fake).mean()


def ns_g(fake: Tensor) -> Tensor:
    """Non-saturating G objective: minimise -log D(G(z)) (Goodfellow et al. 2014, section 3)."""
    return F.softplus(-fake).mean()


def hinge_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    """max(0, 1 - D(x)) + max(0, 1 + D(G(z))): no gradient from samples beyond the margin."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def lsgan_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    """Least squares (Mao et al. 2017), targets 1 for real and 0 for fake."""
    return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()


def lsgan_g(fake: Tensor) -> Tensor:
    return 0.5 * ((fake - 1) ** 2).mean()


def critic_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    """Wasserstein critic: maximise D(x) - D(G(z)); its negative estimates W1 when D is 1-Lipschitz."""
    return fake.mean() - real.mean()


def critic_g(fake: Tensor) -> Tensor:
    """-D(G(z)), shared by the Wasserstein and hinge generators."""
    return -fake.mean()


def probability_stats(real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    return {"d_real": torch.sigmoid(real).mean(), "d_fake": torch.sigmoid(fake).mean()}


def logit_stats(real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    return {"d_real": real.mean(), "d_fake": fake.mean()}


def wasserstein_stats(real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    return {"d_real": real.mean(), "d_fake": fake.mean(), "w_distance": real.mean() - fake.mean()}


@dataclass(frozen=True)
class Objective:
    d_loss: Callable[[Tensor, Tensor, float], Tensor]
    g_loss: Callable[[Tensor], Tensor]
    stats: Callable[[Tensor, Tensor], dict[str, Tensor]]  # D's outputs, for the logs: sigmoid means or raw logits
    lipschitz: str = ""  # '' | 'clip' | 'gp'


LOSSES: dict[str, Objective] = {
    "minimax": Objective(bce_d, minimax_g, probability_stats),
    "ns": Objective(bce_d, ns_g, probability_stats),
    "hinge": Objective(hinge_d, critic_g, logit_stats),
    "lsgan": Objective(lsgan_d, lsgan_g, logit_stats),
    "wgan": Objective(critic_d, critic_g, wasserstein_stats, lipschitz="clip"),
    "wgan-gp": Objective(critic_d, critic_g, wasserstein_stats, lipschitz="gp"),
}
