"""Generators and discriminators: the article's MLP GAN and a DCGAN. Images are [N, C, H, W] in [0, 1]."""

import math

import torch
from torch import nn

from gan.config import ConfigError, ModelConfig


class MLPGenerator(nn.Module):
    """The article's generator: z -> 128 -> 256 -> C*H*W, LeakyReLU between, sigmoid out."""

    def __init__(self, z_dim: int, image_shape: tuple[int, ...], hidden: list[int], slope: float):
        super().__init__()
        self.image_shape = tuple(image_shape)
        layers, width = [], z_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(slope)]
            width = h
        layers += [nn.Linear(width, math.prod(image_shape)), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [N, z] -> [N, C, H, W]
        return self.net(z).view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    """The article's discriminator: C*H*W -> 256 -> 128 -> 1 logit (the sigmoid lives in the loss)."""

    def __init__(self, image_shape: tuple[int, ...], hidden: list[int], slope: float, dropout: float):
        super().__init__()
        layers, width = [nn.Flatten()], math.prod(image_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(slope), nn.Dropout(dropout)]
            width = h
        layers += [nn.Linear(width, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N]
        return self.net(x).squeeze(1)


class DCGANGenerator(nn.Module):
    """DCGAN: project z to a [4w, H/4, W/4] map, then two stride-2 transposed convs up to [C, H, W]."""

    def __init__(self, z_dim: int, image_shape: tuple[int, ...], width: int):
        super().__init__()
        c, h, w = image_shape
        self.start = (4 * width, h // 4, w // 4)
        self.project = nn.Sequential(nn.Linear(z_dim, math.prod(self.start), bias=False), nn.BatchNorm1d(math.prod(self.start)), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False),  # [2w, H/2, W/2]
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, c, 4, 2, 1),  # [C, H, W]
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.project(z).view(-1, *self.start))


class DCGANDiscriminator(nn.Module):
    """DCGAN critic: two stride-2 convs with LeakyReLU, then a linear logit.

    No BatchNorm: real and fake images go through in one concatenated batch (one DDP forward per
    backward), and batch statistics would leak between the two halves.
    """

    def __init__(self, image_shape: tuple[int, ...], width: int, slope: float, dropout: float):
        super().__init__()
        c, h, w = image_shape
        self.net = nn.Sequential(
            nn.Conv2d(c, width, 4, 2, 1),  # [w, H/2, W/2]
            nn.LeakyReLU(slope),
            nn.Dropout(dropout),
            nn.Conv2d(width, 2 * width, 4, 2, 1),  # [2w, H/4, W/4]
            nn.LeakyReLU(slope),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(2 * width * (h // 4) * (w // 4), 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N]
        return self.net(x).squeeze(1)


def check_image_shape(cfg: ModelConfig, image_shape: tuple[int, ...]) -> None:
    """The DCGAN halves the image twice, so height and width must be multiples of 4."""
    if cfg.arch == "dcgan" and (image_shape[1] % 4 or image_shape[2] % 4):
        raise ConfigError(f"model.arch 'dcgan' needs image height and width divisible by 4, got {tuple(image_shape)}; use 'mlp'")


def build_generator(cfg: ModelConfig, image_shape: tuple[int, ...]) -> nn.Module:
    check_image_shape(cfg, image_shape)
    if cfg.arch == "mlp":
        return MLPGenerator(cfg.z_dim, image_shape, cfg.g_hidden, cfg.leaky_slope)
    return DCGANGenerator(cfg.z_dim, image_shape, cfg.width)


def build_discriminator(cfg: ModelConfig, image_shape: tuple[int, ...]) -> nn.Module:
    check_image_shape(cfg, image_shape)
    if cfg.arch == "mlp":
        return MLPDiscriminator(image_shape, cfg.d_hidden, cfg.leaky_slope, cfg.d_dropout)
    return DCGANDiscriminator(image_shape, cfg.width, cfg.leaky_slope, cfg.d_dropout)
