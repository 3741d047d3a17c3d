"""The article's MLP GAN: G z -> 128 -> 256 -> C*H*W (LeakyReLU, sigmoid out), D C*H*W -> 256 -> 128 -> 1.

Also used on vector data (e.g. 2-D points, shape (2,)): then G's output is linear.
"""

import math

import torch
from torch import nn

from gan.config import ModelConfig
from gan.latent import Latent
from gan.networks.layers import Discriminator, LabelInput, sn


class MLPGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, ...], latent: Latent):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.label = LabelInput(latent.num_classes)
        layers, width = [], latent.dim + self.label.extra
        for h in cfg.g_hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(cfg.leaky_slope)]
            width = h
        layers.append(nn.Linear(width, math.prod(image_shape)))
        if len(image_shape) == 3:
            layers.append(nn.Sigmoid())  # images live in [0, 1]; vectors are unbounded
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:  # [N, dim] -> [N, *shape]
        return self.net(self.label(z, c)).view(-1, *self.image_shape)


def mlp_discriminator(cfg: ModelConfig, image_shape: tuple[int, ...], latent: Latent) -> Discriminator:
    layers, width = [nn.Flatten()], math.prod(image_shape)
    for h in cfg.d_hidden:
        layers += [sn(nn.Linear(width, h), cfg.spectral_norm), nn.LeakyReLU(cfg.leaky_slope), nn.Dropout(cfg.d_dropout)]
        width = h
    return Discriminator(nn.Sequential(*layers), width, latent.num_classes, latent.code_dim, cfg.spectral_norm)
