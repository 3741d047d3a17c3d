"""Adaptive discriminator augmentation: the augmentations (identity at p = 0, differentiable, each image changed with
the probability its transforms give, blits exact), the controller (p follows the sign of D's real outputs, moves by the
images seen, stays in [0, 1]), p in the training state (a resumed run equals an uninterrupted one), the recommended
recipe's 'auto' choice, and the data's x-flip (data.mirror)."""

import math

import numpy as np
import pytest
import torch

from gan import augment, distributed
from gan.ada import ADA
from gan.batches import half_mirrored, mirrored, with_mirror_images
from gan.config import Recipe, RegConfig
from gan.recommended import for_data

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)  # the augmentations draw from the global generator


@pytest.mark.parametrize("channels", [1, 3])
def test_p_zero_is_the_identity_and_gradients_reach_the_input(channels: int) -> None:
    x = torch.rand(6, channels, 16, 16, requires_grad=True)
    assert augment.ada_augment(x, 0.0) is x
    y = augment.ada_augment(x, 0.7)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("channels", [1, 3])
def test_each_image_is_left_alone_with_the_probability_its_transforms_give(channels: int) -> None:
    """Every transform is drawn per image with probability p (the rotation twice at 1 - sqrt(1 - p), p in all); some then
    draw the identity: the x-flip half the time, the quarter turns a quarter, the whole-pixel shift 1/9 on 8 px (0 of -1..1
    on both axes), the luma flip half. An image comes out exactly as it went in with the product of what is left."""
    n, p = 4000, 0.1
    x = torch.rand(n, channels, 8, 8)
    y = augment.ada_augment(x, p)
    same = (y == x).flatten(1).all(1).float().mean().item()
    geometric = (1 - p / 2) * (1 - 3 * p / 4) * (1 - 8 * p / 9) * (1 - p) ** 4  # + scale, rotation, anisotropy, fraction
    expected = geometric * ((1 - p) ** 4 * (1 - p / 2) if channels == 3 else (1 - p) ** 2)
    assert abs(same - expected) < 4 * math.sqrt(expected * (1 - expected) / n), (same, expected)


def test_a_pure_blit_moves_pixels_exactly() -> None:
    """x-flip, a quarter turn and a whole-pixel shift map pixel centres onto pixel centres: bilinear resampling then
    reproduces the pixels exactly (up to float rounding), no blur."""
    x = torch.rand(1, 1, 8, 8)
    flipped = torch.nn.functional.grid_sample(
        x, torch.nn.functional.affine_grid(torch.tensor([[[-1.0, 0, 0], [0, 1, 0]]]), [1, 1, 8, 8], align_corners=False),
        mode="bilinear", padding_mode="reflection", align_corners=False)
    torch.testing.assert_close(flipped, x.flip(3))
    y = augment.geometry(x.expand(512, 1, 8, 8).contiguous(), 1.0)
    assert torch.isfinite(y).all()


def test_colour_keeps_grey_pixels_grey_and_turns_the_hue_of_coloured_ones() -> None:
    """Hue rotation and saturation act about the luma axis, on which grey lies: an RGB grey image stays grey at p = 1
    (brightness, contrast and the luma flip move it along the axis); a pure red one turns to other hues."""
    grey_rgb = torch.rand(64, 1, 8, 8).expand(64, 3, 8, 8).contiguous()
    y = augment.colour(grey_rgb, 1.0)
    assert (y.max(1).values - y.min(1).values).abs().max() < 1e-5
    red = torch.zeros(256, 3, 4, 4)
    red[:, 0] = 0.8
    dominant = augment.colour(red, 1.0).mean((2, 3)).argmax(1)  # [256] each image's strongest channel
    assert set(dominant.tolist()) == {0, 1, 2}


class _Loss:
    ada_p = 0.0


class _State:
    ada_p = 0.0


def controller(target: float = 0.6, interval: int = 4, images: int = 1000, batch: int = 10) -> tuple[ADA, _State, _Loss]:
    s, loss = _State(), _Loss()
    reg = RegConfig(ada=True, ada_target=target, ada_interval=interval, ada_images=images)
    return ADA(s, reg, loss, batch, distributed.WorkerContext()), s, loss


def test_p_rises_while_d_is_sure_of_real_images_and_falls_otherwise() -> None:
    ada, s, loss = controller()
    logged = [ada.after_step({"ada_sign": torch.tensor(1.0)}) for _ in range(8)]  # r_t = 1 > 0.6
    assert [bool(x) for x in logged] == [False, False, False, True] * 2  # an adjustment every 4 steps
    assert s.ada_p == pytest.approx(2 * 40 / 1000) and loss.ada_p == s.ada_p  # 40 images per interval, 1000 for 0 -> 1
    assert logged[3]["ada_rt"].item() == 1.0 and logged[-1]["ada_p"].item() == pytest.approx(s.ada_p)
    for _ in range(40):
        ada.after_step({"ada_sign": torch.tensor(0.2)})  # r_t = 0.2 < 0.6: down, and never below 0
    assert s.ada_p == 0.0
    for _ in range(4 * 100):
        ada.after_step({"ada_sign": torch.tensor(0.9)})
    assert s.ada_p == 1.0  # and never above 1


def test_an_epoch_end_closes_a_part_interval_by_the_images_it_saw() -> None:
    ada, s, _ = controller()
    ada.after_step({"ada_sign": torch.tensor(1.0)})
    out = ada.close()
    assert s.ada_p == pytest.approx(10 / 1000) and "ada_p" in out
    assert ada.close() == {}  # nothing left open


@pytest.mark.parametrize(("shape", "rows", "on"), [((1, 28, 28), 1000, True), ((1, 28, 28), 4000, False), ((2,), 100, False)])
def test_auto_ada_follows_the_data_set_size_and_says_why(shape: tuple[int, ...], rows: int, on: bool) -> None:
    recipe, reasons = for_data(Recipe.model_validate({"reg": {"ada_below": 2000}}), shape, rows)
    assert recipe.reg.ada is on
    line = next(r for r in reasons if r.startswith("ADA"))
    assert ("vector data" in line) if len(shape) == 1 else (str(rows) in line and "reg.ada_below 2000" in line)
    assert for_data(Recipe(), (1, 28, 28), None)[0].reg.ada is False  # size unknown: off, and said so


def test_mirror_flips_about_half_the_images_the_same_way_each_time() -> None:
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(256, 1, 4, 4).contiguous()
    batches = mirrored(lambda epoch: [(images, torch.zeros(256, dtype=torch.int64))], seed=3)
    first, again, other = (next(iter(batches(e)))[0] for e in (0, 0, 1))
    flipped = (first == images.flip(3)).flatten(1).all(1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert 0.35 < flipped.float().mean() < 0.65
    assert ((first == images).flatten(1).all(1) | flipped).all()  # each image as it was, or its mirror image


def test_the_yardstick_of_mirrored_data_holds_the_mirror_images() -> None:
    """The reference of a data.mirror run: each image beside its mirror image; its floor: every second image mirrored."""
    images = np.arange(2 * 1 * 2 * 3, dtype=np.uint8).reshape(2, 1, 2, 3)
    both = with_mirror_images(images)
    assert both.shape == (4, 1, 2, 3) and np.array_equal(both[:2], images) and np.array_equal(both[2:], images[..., ::-1])
    half = half_mirrored(images)
    assert np.array_equal(half[0], images[0, ..., ::-1]) and np.array_equal(half[1], images[1]) and np.array_equal(images[0, 0, 0], [0, 1, 2])
