"""Generators and discriminators, by name. Images are [N, C, H, W] in [0, 1]; vectors [N, D].

Every generator is G(z, c=None) -> images and every discriminator D(x, c=None) -> DOut(logits,
features, q): the class input c is used only by conditional models, q only by InfoGAN models, so
conditional and InfoGAN models take no special path through the loop, the checkpoint or the served model.
"""

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from gan.config import ModelConfig
from gan.latent import Latent
from gan.networks.dcgan import DCGANGenerator, dcgan_discriminator
from gan.networks.layers import Discriminator, DOut
from gan.networks.mlp import MLPGenerator, mlp_discriminator
from gan.networks.resnet import ResNetGenerator, resnet_discriminator
from gan.recommended import with_widths

__all__ = ["ARCHS", "DOut", "Discriminator", "build_discriminator", "build_generator"]

Builder = Callable[[ModelConfig, tuple[int, ...], Latent], nn.Module]


@dataclass(frozen=True)
class Arch:
    generator: Builder
    discriminator: Builder


ARCHS: dict[str, Arch] = {
    "mlp": Arch(MLPGenerator, mlp_discriminator),
    "dcgan": Arch(DCGANGenerator, dcgan_discriminator),
    "resnet": Arch(ResNetGenerator, resnet_discriminator),
}


def build_generator(cfg: ModelConfig, image_shape: tuple[int, ...], latent: Latent) -> nn.Module:
    return ARCHS[cfg.arch].generator(with_widths(cfg, image_shape), tuple(image_shape), latent)


def build_discriminator(cfg: ModelConfig, image_shape: tuple[int, ...], latent: Latent) -> Discriminator:
    return ARCHS[cfg.arch].discriminator(with_widths(cfg, image_shape), tuple(image_shape), latent)
