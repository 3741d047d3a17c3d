"""Residual G and D in the style of SNGAN (Miyato et al. 2018), for 28x28, 32x32 and larger images.

G: z -> [w 2^k, H/2^k] -> k upsampling residual blocks (BatchNorm, conditional when the model has
classes) -> BN, ReLU, 3x3 conv -> sigmoid. D: an optimised first block and k - 1 downsampling residual
blocks, one more block at the lowest resolution (dropout after each block when configured), ReLU and global sum pooling.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from gan.config import ModelConfig
from gan.latent import Latent
from gan.networks.layers import ConditionalBatchNorm2d, Discriminator, channels, halvings, sn


class GBlock(nn.Module):
    """BN-ReLU-up-conv3-BN-ReLU-conv3, plus an upsampled 1x1 shortcut: [in, s] -> [out, 2s]."""

    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.bn1, self.bn2 = ConditionalBatchNorm2d(cin, num_classes), ConditionalBatchNorm2d(cout, num_classes)
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), c)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class ResNetGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, ...], latent: Latent):
        super().__init__()
        c, h, w = image_shape
        k, ch = halvings(image_shape), lambda i: channels(cfg.g_width, i, cfg.max_channels)
        self.start = (ch(k), h // 2**k, w // 2**k)
        self.project = nn.Linear(latent.dim, math.prod(self.start))
        self.blocks = nn.ModuleList(GBlock(ch(i), ch(i - 1), latent.num_classes) for i in range(k, 0, -1))
        self.bn = nn.BatchNorm2d(ch(0))
        self.out = nn.Conv2d(ch(0), c, 3, 1, 1)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = self.project(z).view(-1, *self.start)
        for block in self.blocks:
            x = block(x, c)
        return torch.sigmoid(self.out(F.relu(self.bn(x))))  # [N, C, H, W] in [0, 1]


class DBlock(nn.Module):
    """ReLU-conv3-ReLU-conv3 (-avgpool), plus a 1x1 (-avgpool) shortcut; `first` skips the leading ReLU (SNGAN's optimised block)."""

    def __init__(self, cin: int, cout: int, down: bool, first: bool, spectral: bool):
        super().__init__()
        self.conv1, self.conv2 = sn(nn.Conv2d(cin, cout, 3, 1, 1), spectral), sn(nn.Conv2d(cout, cout, 3, 1, 1), spectral)
        self.skip = sn(nn.Conv2d(cin, cout, 1), spectral) if (cin != cout or down) else None
        self.down, self.first = down, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        skip = x
        if self.first:  # pool before the 1x1 conv: the same result, a quarter of the work
            skip = self.skip(F.avg_pool2d(x, 2))
            return F.avg_pool2d(h, 2) + skip
        if self.skip is not None:
            skip = self.skip(skip)
        if self.down:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip


class SumPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C]
        return F.relu(x).sum((2, 3))


def resnet_discriminator(cfg: ModelConfig, image_shape: tuple[int, ...], latent: Latent) -> Discriminator:
    c = image_shape[0]
    k = halvings(image_shape)
    widths = [c] + [channels(cfg.d_width, i, cfg.max_channels) for i in range(k)]
    widths.append(widths[-1])  # the last block keeps the resolution
    layers = []
    for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
        layers += [DBlock(cin, cout, down=i < k, first=i == 0, spectral=cfg.spectral_norm), nn.Dropout(cfg.d_dropout)]
    layers.append(SumPool())
    return Discriminator(nn.Sequential(*layers), widths[-1], latent.num_classes, latent.code_dim, cfg.spectral_norm)
