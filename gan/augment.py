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


# Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"):
# StyleGAN2-ADA's 'bgc' pipeline — pixel blitting, general geometric and colour transforms — each transform applied to
# each image with probability p, which `gan.ada` adapts. Below p ~ 0.8 the transforms do not leak into G's samples:
# D sees the augmented distribution of both sets, and each transform is invertible in distribution.

def _gated(n: int, p: float, x: Tensor) -> Tensor:
    """[n] booleans, each True with probability p."""
    return torch.rand(n, device=x.device) < p


def _lognormal(n: int, std: float, x: Tensor) -> Tensor:
    return torch.exp2(torch.randn(n, device=x.device) * std)


def geometry(x: Tensor, p: float) -> Tensor:
    """x-flip, 90° rotations, integer translation (up to 1/8 of the side), isotropic scaling, rotation, anisotropic
    scaling and fractional translation, each with probability p per image, composed into one affine map per image and
    resampled once (bilinear, reflected at the borders: no black corners for D to spot). The blits map pixel centres
    onto pixel centres, so alone they move pixels exactly."""
    n, _, h, w = x.shape
    eye = torch.eye(3, device=x.device).expand(n, 3, 3)
    m = eye.clone()  # [n, 3, 3] maps output coordinates (in [-1, 1]) to input coordinates

    def then(t: Tensor, on: Tensor) -> None:  # compose transform t [n, 3, 3] for the images where `on` [n] holds
        nonlocal m
        m = m @ torch.where(on[:, None, None], t, eye)

    def affine(a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
        zero, one = torch.zeros_like(a), torch.ones_like(a)
        return torch.stack([torch.stack([a, b, tx], 1), torch.stack([c, d, ty], 1), torch.stack([zero, zero, one], 1)], 1)

    zeros, ones = torch.zeros(n, device=x.device), torch.ones(n, device=x.device)
    flip = 1 - 2 * torch.randint(0, 2, (n,), device=x.device).float()
    then(affine(flip, zeros, zeros, ones, zeros, zeros), _gated(n, p, x))
    quarter = torch.randint(0, 4, (n,), device=x.device).float() * (torch.pi / 2)
    then(affine(quarter.cos(), -quarter.sin(), quarter.sin(), quarter.cos(), zeros, zeros), _gated(n, p, x))
    shift = torch.randint(-(w // 8), w // 8 + 1, (2, n), device=x.device).float()  # whole pixels: 2/side per pixel
    then(affine(ones, zeros, zeros, ones, shift[0] * 2 / w, shift[1] * 2 / h), _gated(n, p, x))
    s = _lognormal(n, 0.2, x)
    then(affine(s, zeros, zeros, s, zeros, zeros), _gated(n, p, x))
    p_rot = 1 - (1 - p) ** 0.5  # rotated before and after the anisotropic scaling: p in all (as StyleGAN2-ADA)
    for _ in range(2):
        if _ == 1:
            a = _lognormal(n, 0.2, x)
            then(affine(a, zeros, zeros, 1 / a, zeros, zeros), _gated(n, p, x))
        theta = (torch.rand(n, device=x.device) * 2 - 1) * torch.pi
        then(affine(theta.cos(), -theta.sin(), theta.sin(), theta.cos(), zeros, zeros), _gated(n, p_rot, x))
    t = torch.randn(2, n, device=x.device) * 0.125 * 2  # a normal shift of 1/8 of the side, in [-1, 1] units
    then(affine(ones, zeros, zeros, ones, t[0], t[1]), _gated(n, p, x))
    grid = torch.nn.functional.affine_grid(m[:, :2], list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour(x: Tensor, p: float) -> Tensor:
    """Brightness, contrast, luma flip, hue rotation and saturation (the last three RGB only), each with probability p per
    image, as one 4x4 colour matrix per image acting on (r, g, b, 1) in [-1, 1], StyleGAN2-ADA's colour space."""
    n, c = x.shape[:2]
    if c != 3:  # grey: brightness and contrast only
        b = torch.randn(n, 1, 1, 1, device=x.device) * 0.2 * _gated(n, p, x)[:, None, None, None]
        k = torch.where(_gated(n, p, x), _lognormal(n, 0.5, x), torch.ones(n, device=x.device))[:, None, None, None]
        return ((x * 2 - 1) * k + 2 * b + 1) / 2  # brightness in [-1, 1] units, contrast about mid-grey
    eye = torch.eye(4, device=x.device).expand(n, 4, 4)
    m = eye.clone()
    v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=x.device) / 3**0.5  # the luma axis
    vv = torch.outer(v, v)

    def then(t: Tensor, on: Tensor) -> None:
        nonlocal m
        m = torch.where(on[:, None, None], t, eye) @ m

    b = torch.randn(n, device=x.device) * 0.2
    bright = eye.clone()
    bright[:, :3, 3] = b[:, None]
    then(bright, _gated(n, p, x))
    k = _lognormal(n, 0.5, x)
    then(torch.diag_embed(torch.stack([k, k, k, torch.ones_like(k)], 1)), _gated(n, p, x))
    flip = torch.randint(0, 2, (n, 1, 1), device=x.device).float()
    then(eye - 2 * vv * flip, _gated(n, p, x))
    theta = (torch.rand(n, device=x.device) * 2 - 1) * torch.pi
    then(_rotation_about(v[:3], theta), _gated(n, p, x))
    s = _lognormal(n, 1.0, x)[:, None, None]
    then(vv + (eye - vv) * s, _gated(n, p, x))
    flat = (x * 2 - 1).flatten(2)  # [n, 3, H*W]
    out = m[:, :3, :3] @ flat + m[:, :3, 3:]
    return ((out + 1) / 2).view_as(x)


def _rotation_about(axis: Tensor, theta: Tensor) -> Tensor:
    """4x4 rotations [n, 4, 4] by theta [n] about a unit axis [3] (Rodrigues' formula)."""
    a = axis
    k = torch.tensor([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]], device=theta.device)
    r = torch.eye(3, device=theta.device) + theta.sin()[:, None, None] * k + (1 - theta.cos())[:, None, None] * (k @ k)
    out = torch.eye(4, device=theta.device).repeat(len(theta), 1, 1)
    out[:, :3, :3] = r
    return out


def ada_augment(x: Tensor, p: float) -> Tensor:
    """ADA's augmentations of a batch [N, C, H, W] at probability p (differentiable; p = 0 returns x itself)."""
    if p <= 0:
        return x
    return colour(geometry(x, p), p)
