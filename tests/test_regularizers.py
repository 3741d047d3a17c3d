"""Regularisers at known points: R1 and the gradient penalty of linear discriminators, interpolates,
feature matching, the InfoGAN term, weight clipping and the instance-noise schedule."""

import math

import pytest
import torch
from torch import nn

from gan import regularizers as R


def linear_d(w: torch.Tensor) -> nn.Module:
    """D(x) = w . flatten(x) + 0.3, whose input gradient is w everywhere."""
    D = nn.Sequential(nn.Flatten(), nn.Linear(w.numel(), 1))
    with torch.no_grad():
        D[1].weight.copy_(w.view(1, -1))
        D[1].bias.fill_(0.3)
    return D


def images(seed: int) -> torch.Tensor:
    return torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(seed))


def logits_and_input(D: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    return D(x).squeeze(1), x


def test_r1_of_a_constant_discriminator_is_zero() -> None:
    assert R.r1_penalty(*logits_and_input(linear_d(torch.zeros(16)), images(0))).item() == 0.0


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm() -> None:
    w = torch.randn(16, generator=torch.Generator().manual_seed(0))
    D = linear_d(w)
    penalty = R.r1_penalty(*logits_and_input(D, images(0)))
    assert penalty.item() == pytest.approx(w.square().sum().item(), rel=1e-5)
    penalty.backward()  # the penalty trains D: d|w|^2/dw = 2w
    torch.testing.assert_close(D[1].weight.grad.view(-1), 2 * w)


def test_gradient_penalty_is_zero_for_unit_gradient_norm_and_squared_distance_from_one_otherwise() -> None:
    w = torch.randn(16, generator=torch.Generator().manual_seed(0))
    unit = w / w.norm()
    assert R.gradient_penalty(*logits_and_input(linear_d(unit), images(0))).item() == pytest.approx(0.0, abs=1e-10)
    for scale in (0.5, 3.0):
        penalty = R.gradient_penalty(*logits_and_input(linear_d(scale * unit), images(1)))
        assert penalty.item() == pytest.approx((scale - 1) ** 2, rel=1e-5)


def test_interpolates_lie_on_the_segments_between_real_and_fake() -> None:
    real, fake = images(0), images(1)
    interp = R.interpolates(real, fake, R.interpolation_weights(real, torch.Generator().manual_seed(0)))
    assert interp.shape == real.shape and interp.requires_grad and interp.is_leaf
    # x_hat = fake + alpha (real - fake), one alpha in [0, 1] per sample
    alpha = ((interp - fake) / (real - fake)).flatten(1)
    assert (alpha.amax(1) - alpha.amin(1)).max() < 1e-4
    assert (alpha >= -1e-6).all() and (alpha <= 1 + 1e-6).all()
    assert alpha[:, 0].std() > 0  # placed at random, not all at one point


def test_feature_matching_compares_means_only() -> None:
    f = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    shuffled_centred = f[torch.randperm(8)] * 3 - 2 * f.mean(0)  # other samples, same mean
    assert R.feature_matching(f, shuffled_centred).item() == pytest.approx(0.0, abs=1e-10)
    assert R.feature_matching(f, f + 0.5).item() == pytest.approx(0.25, rel=1e-5)


def test_info_loss_at_known_distributions() -> None:
    codes, k = torch.tensor([0, 3, 7, 9]), 10
    perfect = 50.0 * nn.functional.one_hot(codes, k).float()
    assert R.info_loss(perfect, codes, None, k).item() < 1e-6
    assert R.info_loss(torch.zeros(4, k), codes, None, k).item() == pytest.approx(math.log(k), rel=1e-6)
    continuous = torch.tensor([[0.5, -1.0], [0.2, 0.0], [1.0, 1.0], [-0.3, 0.4]])
    q = torch.cat([perfect, torch.zeros(4, 2)], 1)  # predicts 0 for both continuous codes
    expected = 0.05 * continuous.square().sum(1).mean().item()
    assert R.info_loss(q, codes, continuous, k).item() == pytest.approx(expected, rel=1e-5)
    assert R.info_loss(q[:, k:], None, continuous, 0).item() == pytest.approx(expected, rel=1e-5)
    assert R.info_loss(torch.cat([perfect, continuous], 1), codes, continuous, k).item() < 1e-6


def test_clip_weights_bounds_every_parameter_and_keeps_those_inside() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 1)
    before = [p.detach().clone() for p in net.parameters()]
    assert any((b.abs() > 0.1).any() for b in before)
    R.clip_weights(net, 0.1)
    for b, p in zip(before, net.parameters()):
        assert p.abs().max() <= 0.1
        torch.testing.assert_close(p[b.abs() <= 0.1], b[b.abs() <= 0.1])


@pytest.mark.parametrize("progress, std", [(0.0, 2.0), (0.25, 1.0), (0.4, 0.4), (0.5, 0.0), (0.9, 0.0)])
def test_instance_noise_decays_linearly_to_zero(progress: float, std: float) -> None:
    assert R.instance_noise_std(2.0, progress, anneal=0.5) == pytest.approx(std)
