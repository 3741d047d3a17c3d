"""Pieces every architecture shares: the discriminator head (logit, projection, InfoGAN Q), label inputs, spectral norm."""

from typing import NamedTuple

import torch
from torch import nn

EMBED_DIM = 32  # label embedding concatenated to z in conditional MLP / DCGAN generators


class DOut(NamedTuple):
    """What a discriminator returns: logits [N], features of its last hidden layer [N, F], InfoGAN Q output [N, K] or None."""

    logits: torch.Tensor
    features: torch.Tensor
    q: torch.Tensor | None


def sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Spectral normalisation of a layer's weight (one power iteration per forward in training mode)."""
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


def halvings(image_shape: tuple[int, ...]) -> int:
    """How often a conv net halves the image: while both sides stay even and at least 4, but at least twice.

    28 -> 14 -> 7 (2), 32 -> 4 (3), 64 -> 4 (4), 8 -> 2 (2). `check_recipe` guarantees sides divisible by 4.
    """
    _, h, w = image_shape
    k = 0
    while h % 2 == 0 and w % 2 == 0 and h // 2 >= 4 and w // 2 >= 4:
        h, w, k = h // 2, w // 2, k + 1
    return max(k, 2)


def channels(width: int, i: int, cap: int) -> int:
    """Channels at resolution H / 2^i: `width` x 2^i, doubling as the image halves, but at most `cap` (model.max_channels),
    so that a 128 px net's lowest levels stay as wide as a 32 px net's instead of doubling on (StyleGAN's channel_max)."""
    return min(width * 2**i, cap)


class Discriminator(nn.Module):
    """A body x -> h [N, F], then a linear logit, plus <embed(c), h> for conditional models (the projection
    discriminator of Miyato & Koyama 2018) and a Q head on h for InfoGAN (Chen et al. 2016)."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, code_dim: int, spectral: bool):
        super().__init__()
        self.body = body
        self.linear = sn(nn.Linear(feature_dim, 1), spectral)
        self.embed = sn(nn.Embedding(num_classes, feature_dim), spectral) if num_classes else None
        self.q = nn.Sequential(nn.Linear(feature_dim, 128), nn.LeakyReLU(0.2), nn.Linear(128, code_dim)) if code_dim else None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> DOut:
        h = self.body(x)  # [N, F]
        logits = self.linear(h).squeeze(1)
        if self.embed is not None:
            assert c is not None, "a conditional discriminator needs the class labels c"
            logits = logits + (self.embed(c) * h).sum(1)  # projection term
        return DOut(logits, h, self.q(h) if self.q is not None else None)


class LabelInput(nn.Module):
    """z -> [z | embed(c)] for conditional generators; identity for unconditional ones."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, EMBED_DIM) if num_classes else None
        self.extra = EMBED_DIM if num_classes else 0

    def forward(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            return z
        assert c is not None, "a conditional generator needs the class labels c"
        return torch.cat([z, self.embed(c)], 1)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift come from the class label (de Vries et al. 2017); plain BatchNorm without classes."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=not num_classes)
        if num_classes:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.zeros_(self.gain.weight)  # starts as an identity affine map: 1 + 0, 0
            nn.init.zeros_(self.bias.weight)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        out = self.bn(x)
        if not self.num_classes:
            return out
        return out * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]
