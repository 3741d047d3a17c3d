"""GAN losses. Pure: each takes the networks and a batch and returns (loss, stats); no optimizers, no logging."""

import torch
import torch.nn.functional as F
from torch import nn


def discriminator_loss(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Minimax D objective: maximise log D(x) + log(1 - D(G(z))), written as softplus on logits.

    Real and fake go through D as one batch, so a DDP-wrapped D sees one forward per backward.
    """
    logits = D(torch.cat([real, fake.detach()]))  # [2N]
    real_logits, fake_logits = logits.split([len(real), len(fake)])
    loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    stats = {"loss_d": loss.detach(), "d_real": torch.sigmoid(real_logits).mean().detach(), "d_fake": torch.sigmoid(fake_logits).mean().detach()}
    return loss, stats


def generator_loss(D: nn.Module, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Non-saturating G objective: maximise log D(G(z)) instead of minimising log(1 - D(G(z))).

    The minimax form's gradient vanishes while D confidently rejects fakes, early in training.
    """
    loss = F.softplus(-D(fake)).mean()
    return loss, {"loss_g": loss.detach()}
