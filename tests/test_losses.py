"""Losses: the minimax values at known points, and gradient directions."""

import math

import torch
from torch import nn

from gan.losses import discriminator_loss, generator_loss


class Constant(nn.Module):
    """A 'discriminator' that outputs one learnable logit for every image."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(logit))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit.expand(len(x))


def test_undecided_discriminator_loss_is_2_log_2() -> None:
    real, fake = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    loss, stats = discriminator_loss(Constant(0.0), real, fake)
    assert math.isclose(loss.item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(stats["d_real"].item(), 0.5) and math.isclose(stats["d_fake"].item(), 0.5)


def test_non_saturating_generator_loss_keeps_its_gradient() -> None:
    """When D confidently rejects fakes, log(1 - D(G(z))) saturates; -log D(G(z)) does not."""
    fake = torch.rand(4, 1, 8, 8, requires_grad=True)

    class Scorer(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1).sum(1) - 100.0  # D(G(z)) ~ sigmoid(-70): fakes rejected

    loss, stats = generator_loss(Scorer(), fake)
    loss.backward()
    assert loss.item() > 50 and torch.isfinite(loss)
    assert fake.grad.abs().min() > 0.1  # each pixel still gets a useful gradient
    assert set(stats) == {"loss_g"}


def test_discriminator_loss_does_not_backprop_into_the_generator() -> None:
    fake = torch.rand(4, 1, 8, 8, requires_grad=True)
    loss, _ = discriminator_loss(Constant(0.3), torch.rand(4, 1, 8, 8), fake)
    loss.backward()
    assert fake.grad is None
