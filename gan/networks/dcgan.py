"""DCGAN (Radford et al. 2016): transposed-conv G with BatchNorm, strided-conv D. Depth follows the image size.

At resolution H / 2^i, G carries g_width * 2^i channels and D d_width * 2^(i-1), each at most model.max_channels
(`layers.channels`): for 28x28, g_width 16 and d_width 64, G goes [64, 7, 7] -> [32, 14, 14] -> [C, 28, 28] and D
[C, 28, 28] -> [64, 14, 14] -> [128, 7, 7]; at 128x128 G starts at [min(16 * 32, 512), 4, 4] and halves five times.
"""

import math

import torch
from torch import nn

from gan.config import ModelConfig
from gan.latent import Latent
from gan.networks.layers import Discriminator, LabelInput, channels, halvings, sn


class DCGANGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, ...], latent: Latent):
        super().__init__()
        c, h, w = image_shape
        k, ch = halvings(image_shape), lambda i: channels(cfg.g_width, i, cfg.max_channels)
        self.start = (ch(k), h // 2**k, w // 2**k)
        self.label = LabelInput(latent.num_classes)
        self.project = nn.Sequential(
            nn.Linear(latent.dim + self.label.extra, math.prod(self.start), bias=False), nn.BatchNorm1d(math.prod(self.start)), nn.ReLU()
        )
        layers = []
        for i in range(k, 1, -1):  # [ch(i), H/2^i] -> [ch(i-1), H/2^(i-1)]
            layers += [nn.ConvTranspose2d(ch(i), ch(i - 1), 4, 2, 1, bias=False), nn.BatchNorm2d(ch(i - 1)), nn.ReLU()]
        layers += [nn.ConvTranspose2d(ch(1), c, 4, 2, 1), nn.Sigmoid()]  # [C, H, W] in [0, 1]
        self.up = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.up(self.project(self.label(z, c)).view(-1, *self.start))


def dcgan_discriminator(cfg: ModelConfig, image_shape: tuple[int, ...], latent: Latent) -> Discriminator:
    """Strided convs with LeakyReLU. No BatchNorm: real and fake go through D in one concatenated batch,
    and batch statistics would leak between the halves (and break the gradient penalty's per-sample gradients)."""
    c, h, w = image_shape
    k = halvings(image_shape)
    layers, cin = [], c
    for i in range(k):  # [C or ch(i-1), H/2^i] -> [ch(i), H/2^(i+1)]
        cout = channels(cfg.d_width, i, cfg.max_channels)
        layers += [sn(nn.Conv2d(cin, cout, 4, 2, 1), cfg.spectral_norm), nn.LeakyReLU(cfg.leaky_slope), nn.Dropout(cfg.d_dropout)]
        cin = cout
    layers.append(nn.Flatten())
    feature_dim = cin * (h // 2**k) * (w // 2**k)
    return Discriminator(nn.Sequential(*layers), feature_dim, latent.num_classes, latent.code_dim, cfg.spectral_norm)
