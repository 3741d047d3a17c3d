"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image D sees, real and
fake, in both the D and the G phase, so D cannot memorise a small training set and G is not taught the
augmentations. Each image [N, C, H, W] gets its own random transform; gradients flow through all of them.
"""

from collections.abc import Callable

import torch

Tensor = torch.Tensor


def brightness(x: Tensor) -> Tensor:
    return x + (torch.rand(len(x), 1, 1, 1, device=x.device) - 0.5)


def saturation(x: Tensor) -> Tensor:
    mean = x.mean(1, keepdim=True)
    return (x - mean) * (torch.rand(len(x), 1, 1, 1, device=x.device) * 2) + mean


def contrast(x: Tensor) -> Tensor:
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(len(x), 1, 1, 1, device=x.device) + 0.5) + mean


def color(x: Tensor) -> Tensor:
    return contrast(saturation(brightness(x)))


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ratio x its size in each direction, filling with zeros."""
    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    rows = torch.arange(h, device=x.device)[None, :, None] + torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)  # [n, h, 1]
    cols = torch.arange(w, device=x.device)[None, None, :] + torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)  # [n, 1, w]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # [n, h, w]
    source = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).flatten(1)  # [n, h*w] flat source pixel of each target pixel
    shifted = x.flatten(2).gather(2, source[:, None, :].expand(n, c, h * w)).view_as(x)
    return shifted * inside[:, None].to(x.dtype)


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero one square of ratio x the image size per image, centred anywhere (it may hang over the edge)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device) - cw // 2
    rows, cols = torch.arange(h, device=x.device)[None, :, None], torch.arange(w, device=x.device)[None, None, :]
    hole = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # [n, h, w]
    return x * (~hole)[:, None].to(x.dtype)


AUGMENTATIONS: dict[str, Callable[[Tensor], Tensor]] = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: Tensor, policy: list[str]) -> Tensor:
    """Apply the named augmentations in the reference order (color, translation, cutout)."""
    for name in AUGMENTATIONS:
        if name in policy:
            x = AUGMENTATIONS[name](x)
    return x
