"""Optimisers and gradient treatments: schedule values, norm clipping, the L1 subgradient, coupled weight decay."""

import math

import pytest
import torch
from torch import nn

from gan.config import OptimConfig
from gan.optim import SCHEDULES, add_l1_gradient, build_optimizer, clip_gradient, lazy_ratio, lr_factor

# lr factor at progress 0, 0.5 and 1 (and one point inside the decay)
SCHEDULE_VALUES = [
    (dict(schedule="constant"), [(0.0, 1.0), (0.5, 1.0), (1.0, 1.0)]),
    (dict(schedule="step", step_every=0.5, step_gamma=0.1), [(0.0, 1.0), (0.49, 1.0), (0.5, 0.1), (1.0, 0.01)]),
    (dict(schedule="step", step_every=0.25, step_gamma=0.5), [(0.0, 1.0), (0.5, 0.25), (0.6, 0.25), (1.0, 0.0625)]),
    (dict(schedule="linear", decay_start=0.5), [(0.0, 1.0), (0.5, 1.0), (0.75, 0.5), (1.0, 0.0)]),
    (dict(schedule="linear", decay_start=0.0), [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]),
    (dict(schedule="cosine"), [(0.0, 1.0), (0.25, (1 + math.sqrt(0.5)) / 2), (0.5, 0.5), (1.0, 0.0)]),
]


@pytest.mark.parametrize("settings, values", SCHEDULE_VALUES)
def test_schedule_values(settings: dict, values: list[tuple[float, float]]) -> None:
    cfg = OptimConfig(**settings)
    for progress, factor in values:
        assert lr_factor(cfg, progress) == pytest.approx(factor, abs=1e-12), f"{settings} at {progress}"


def test_every_schedule_is_tested() -> None:
    assert {s["schedule"] for s, _ in SCHEDULE_VALUES} == set(SCHEDULES)


def net_with_gradient(value: float) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))  # 6 + 2 + 4 + 2 = 14 parameters
    for p in net.parameters():
        p.grad = torch.full_like(p, value)
    return net


def global_norm(net: nn.Module) -> float:
    return torch.cat([p.grad.flatten() for p in net.parameters()]).norm().item()


def test_clip_gradient_bounds_the_global_norm_and_returns_the_norm_before() -> None:
    net = net_with_gradient(1.0)  # global norm sqrt(14)
    before = clip_gradient(net, 0.5)
    assert before.item() == pytest.approx(math.sqrt(14))
    assert global_norm(net) <= 0.5 + 1e-6
    directions = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert torch.allclose(directions, directions[0].expand_as(directions))  # scaled, not clamped per element
    small = net_with_gradient(0.1)
    assert clip_gradient(small, 10.0).item() == pytest.approx(0.1 * math.sqrt(14))
    assert global_norm(small) == pytest.approx(0.1 * math.sqrt(14))  # below the bound: untouched


def test_l1_adds_lambda_times_the_sign_of_each_weight() -> None:
    net = net_with_gradient(0.5)
    with torch.no_grad():
        net[0].weight[0, 0] = 0.0  # sign 0: no push
    frozen = nn.Linear(2, 2)  # no gradient: stays without one
    add_l1_gradient(nn.ModuleList([net, frozen]), 0.01)
    for p in net.parameters():
        torch.testing.assert_close(p.grad, 0.5 + 0.01 * torch.sign(p.detach()))
    assert net[0].weight.grad[0, 0] == 0.5
    assert all(p.grad is None for p in frozen.parameters())


@pytest.mark.parametrize("optimizer, cls", [("adam", torch.optim.Adam), ("rmsprop", torch.optim.RMSprop)])
def test_optimizer_choice_and_settings(optimizer: str, cls: type) -> None:
    cfg = OptimConfig(optimizer=optimizer, beta1=0.3, beta2=0.9)
    opt = build_optimizer(cfg, nn.Linear(2, 2).parameters(), lr=1e-3, weight_decay=0.01)
    group = opt.param_groups[0]
    assert type(opt) is cls and group["lr"] == 1e-3 and group["weight_decay"] == 0.01
    assert group["betas"] == (0.3, 0.9) if optimizer == "adam" else group["alpha"] == 0.9


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_weight_decay_shrinks_weights_without_a_loss_gradient(optimizer: str) -> None:
    cfg = OptimConfig(optimizer=optimizer)
    for weight_decay, shrinks in ((0.1, True), (0.0, False)):
        net = net_with_gradient(0.0)  # a zero loss gradient: only the L2 term moves the weights
        before = [p.detach().clone() for p in net.parameters()]
        assert min(b.abs().min() for b in before) > 1e-3
        # Both normalise the first step (RMSprop to ~lr / sqrt(1 - alpha)): a small lr keeps it from overshooting 0.
        build_optimizer(cfg, net.parameters(), lr=1e-5, weight_decay=weight_decay).step()
        for b, p in zip(before, net.parameters()):
            if shrinks:
                assert (p.abs() < b.abs()).all()
            else:
                assert torch.equal(p, b)


def test_lazy_r1_corrects_ds_learning_rate_and_betas_as_stylegan2_does() -> None:
    """R1 every k steps adds one optimiser step per k: D's learning rate x k/(k+1), its betas ** k/(k+1)."""
    from gan.latent import Latent  # noqa: PLC0415
    from gan.state import build_state  # noqa: PLC0415
    from gan.training_loop import build_phases  # noqa: PLC0415
    from tests.test_training_loop import SHAPE, recipe  # noqa: PLC0415

    assert lazy_ratio(16) == 16 / 17 and lazy_ratio(1) == 1.0
    lazy = recipe(reg=dict(r1_gamma=1.0, r1_every=4), optim=dict(lr_d=1e-3, beta1=0.5, beta2=0.9))
    s = build_state(lazy, SHAPE, Latent.of(lazy.model, 10), torch.device("cpu"))
    group = s.opt_D.param_groups[0]
    assert group["betas"] == pytest.approx((0.5**0.8, 0.9**0.8)) and s.opt_G.param_groups[0]["betas"] == (0.5, 0.9)
    phases = {p.name: p for p in build_phases(lazy, s, lambda: None)}
    assert phases["D"].lr == phases["Dreg"].lr == pytest.approx(0.8e-3) and phases["G"].lr == lazy.optim.lr_g
    plain = recipe(optim=dict(lr_d=1e-3, beta1=0.5, beta2=0.9))
    s = build_state(plain, SHAPE, Latent.of(plain.model, 10), torch.device("cpu"))
    assert s.opt_D.param_groups[0]["betas"] == (0.5, 0.9) and build_phases(plain, s, lambda: None)[0].lr == 1e-3
