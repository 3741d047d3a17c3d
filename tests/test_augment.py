"""DiffAugment: shapes kept, gradients reach the input, translation moves mass without losing it,
cutout zeroes one square of the expected size, color changes RGB images, and the reference order."""

import pytest
import torch

from gan import augment


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)  # the augmentations draw from the global generator


@pytest.mark.parametrize("name", list(augment.AUGMENTATIONS))
def test_shape_kept_and_differentiable(name: str) -> None:
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    y = augment.AUGMENTATIONS[name](x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_by_ratio_zero_is_the_identity() -> None:
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(augment.translation(x, ratio=0.0), x)


def test_translation_shifts_a_centred_blob_without_losing_mass() -> None:
    """16x16 shifts by at most round(16/8) = 2 pixels, so a 4x4 blob in the middle stays inside."""
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 6:10, 6:10] = torch.rand(64, 1, 4, 4) + 0.5
    y = augment.translation(x)
    torch.testing.assert_close(y.sum((1, 2, 3)), x.sum((1, 2, 3)))
    rows, cols = (y[:, 0] > 0).nonzero(as_tuple=True)[1:]
    assert rows.min() >= 4 and rows.max() <= 11 and cols.min() >= 4 and cols.max() <= 11
    moved = [not torch.equal(y[i], x[i]) for i in range(64)]
    assert sum(moved) > 48  # all but the 1-in-25 zero shifts
    for i in range(64):  # each is the same blob, shifted
        r, c = (y[i, 0] > 0).nonzero()[0]
        torch.testing.assert_close(y[i, :, r : r + 4, c : c + 4], x[i, :, 6:10, 6:10])


def test_cutout_zeroes_one_square_of_at_most_a_quarter() -> None:
    """ratio 0.5 of 32x32 is a 16x16 square: a quarter of the image when inside, less where it hangs over the edge."""
    y = augment.cutout(torch.ones(256, 3, 32, 32))
    holes = y == 0
    assert torch.equal(holes, holes[:, :1].expand_as(holes))  # the same hole in every channel
    zeroed = holes[:, 0].float().mean((1, 2))
    assert zeroed.max() == 0.25 and zeroed.min() > 0
    assert 0.15 < zeroed.mean() < 0.25
    for hole in holes[:, 0]:  # one rectangle: its rows and columns times each other
        rows, cols = hole.any(1), hole.any(0)
        assert torch.equal(hole, rows[:, None] & cols[None, :])
        assert rows.sum() <= 16 and cols.sum() <= 16


def test_color_changes_rgb_images() -> None:
    x = torch.rand(8, 3, 8, 8)
    y = augment.color(x)
    assert y.shape == x.shape and (y - x).abs().flatten(1).amax(1).min() > 1e-3


def test_diff_augment_applies_the_policy_in_the_reference_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    for name in ("color", "translation", "cutout"):
        monkeypatch.setitem(augment.AUGMENTATIONS, name, lambda x, name=name: calls.append(name) or x + 1)
    x = torch.zeros(2, 3, 4, 4)
    assert torch.equal(augment.diff_augment(x, ["cutout", "color", "translation"]), x + 3)
    assert calls == ["color", "translation", "cutout"]
    calls.clear()
    assert torch.equal(augment.diff_augment(x, ["cutout"]), x + 1) and calls == ["cutout"]
    calls.clear()
    assert torch.equal(augment.diff_augment(x, []), x) and calls == []


def test_the_config_knows_exactly_the_augmentations_there_are() -> None:
    from gan.config import AUGMENTS

    assert set(AUGMENTS) == set(augment.AUGMENTATIONS)
