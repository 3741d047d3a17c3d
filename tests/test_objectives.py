"""Adversarial objectives: every LOSSES entry at known points, saturation, margins, targets and label smoothing."""

import math

import pytest
import torch

from gan.objectives import LOSSES, bce_d, minimax_g, ns_g

LOG2 = math.log(2)
# Losses of an undecided D (every logit 0): (D loss, G loss).
AT_ZERO = {
    "minimax": (2 * LOG2, -LOG2),  # -log 1/2 twice; G minimises log(1 - 1/2)
    "ns": (2 * LOG2, LOG2),  # G minimises -log 1/2
    "hinge": (2.0, 0.0),  # both samples sit on the margin
    "lsgan": (0.5, 0.5),  # 0.5 (0 - 1)^2 + 0.5 0^2; G: 0.5 (0 - 1)^2
    "wgan": (0.0, 0.0),
    "wgan-gp": (0.0, 0.0),
}


def grad_of(loss_fn, logits: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    logits = logits.clone().requires_grad_(True)
    loss_fn(logits).backward()
    return logits.grad


@pytest.mark.parametrize("name", list(LOSSES))
def test_values_of_an_undecided_discriminator(name: str) -> None:
    zeros = torch.zeros(4)
    d_value, g_value = AT_ZERO[name]
    assert LOSSES[name].d_loss(zeros, zeros, 0.0).item() == pytest.approx(d_value, abs=1e-6)
    assert LOSSES[name].g_loss(zeros).item() == pytest.approx(g_value, abs=1e-6)


def test_every_loss_is_covered_and_only_the_wasserstein_ones_need_a_lipschitz_constraint() -> None:
    assert set(LOSSES) == set(AT_ZERO)
    assert {name: o.lipschitz for name, o in LOSSES.items() if o.lipschitz} == {"wgan": "clip", "wgan-gp": "gp"}


def test_minimax_generator_saturates_where_non_saturating_does_not() -> None:
    """When D confidently rejects fakes (logit -20), log(1 - D(G(z))) is flat; -log D(G(z)) is steep."""
    rejected = torch.full((4,), -20.0)
    assert grad_of(minimax_g, rejected).abs().max() < 1e-8
    torch.testing.assert_close(grad_of(ns_g, rejected), torch.full((4,), -0.25))  # -sigmoid(20) / N
    assert LOSSES["minimax"].g_loss is minimax_g and LOSSES["ns"].g_loss is ns_g
    assert LOSSES["minimax"].d_loss is LOSSES["ns"].d_loss  # the two differ only in G's objective


def test_hinge_ignores_samples_beyond_the_margin() -> None:
    hinge = LOSSES["hinge"]
    real, fake = torch.tensor([1.5, 3.0], requires_grad=True), torch.tensor([-1.5, -4.0], requires_grad=True)
    loss = hinge.d_loss(real, fake, 0.0)
    loss.backward()
    assert loss.item() == 0.0 and not real.grad.any() and not fake.grad.any()
    inside = torch.tensor([0.5, 2.0], requires_grad=True)  # one real sample inside the margin, one beyond
    hinge.d_loss(inside, torch.tensor([-2.0, -2.0]), 0.0).backward()
    torch.testing.assert_close(inside.grad, torch.tensor([-0.5, 0.0]))
    assert hinge.d_loss(torch.tensor([0.5]), torch.tensor([-0.25]), 0.0).item() == pytest.approx(0.5 + 0.75)


def test_lsgan_targets() -> None:
    lsgan = LOSSES["lsgan"]
    assert lsgan.d_loss(torch.ones(3), torch.zeros(3), 0.0).item() == 0.0
    assert lsgan.g_loss(torch.ones(3)).item() == 0.0
    assert lsgan.d_loss(torch.full((3,), 3.0), torch.zeros(3), 0.0).item() == pytest.approx(0.5 * 4)


@pytest.mark.parametrize("name", ["wgan", "wgan-gp"])
def test_critic_loss_is_mean_fake_minus_mean_real(name: str) -> None:
    real, fake = torch.randn(16, generator=torch.Generator().manual_seed(0)), torch.randn(16, generator=torch.Generator().manual_seed(1))
    objective = LOSSES[name]
    torch.testing.assert_close(objective.d_loss(real, fake, 0.0), fake.mean() - real.mean())
    torch.testing.assert_close(objective.g_loss(fake), -fake.mean())
    torch.testing.assert_close(objective.stats(real, fake)["w_distance"], real.mean() - fake.mean())


@pytest.mark.parametrize("smoothing", [0.1, 0.2, 0.3])
def test_label_smoothing_moves_the_optimal_real_logit_to_logit_of_1_minus_s(smoothing: float) -> None:
    """With target 1 - s, the real term is minimised where sigmoid(r) = 1 - s, i.e. r = log((1 - s) / s)."""
    optimum = math.log((1 - smoothing) / smoothing)
    fake = torch.zeros(1)

    def real_term(r: torch.Tensor) -> torch.Tensor:
        return bce_d(r, fake, smoothing)

    assert grad_of(real_term, torch.tensor([optimum])).abs().item() < 1e-6
    at = real_term(torch.tensor([optimum])).item()
    assert real_term(torch.tensor([optimum - 0.1])).item() > at and real_term(torch.tensor([optimum + 0.1])).item() > at
    assert grad_of(lambda r: bce_d(r, fake, 0.0), torch.tensor([optimum])).item() < 0  # unsmoothed: keeps pushing up
