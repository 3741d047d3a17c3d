"""Networks: shapes, output range, and the article's MLP layout."""

import pytest
import torch

from gan.config import ConfigError, ModelConfig
from gan.networks import build_discriminator, build_generator


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 16, 16), (3, 8, 8)])
def test_generator_and_discriminator_shapes(arch: str, image_shape: tuple[int, ...]) -> None:
    cfg = ModelConfig(arch=arch, z_dim=16, width=8)
    G, D = build_generator(cfg, image_shape), build_discriminator(cfg, image_shape)
    images = G(torch.randn(2, 16))
    assert images.shape == (2, *image_shape)
    assert images.min() >= 0 and images.max() <= 1  # sigmoid output, like the data in [0, 1]
    assert D(images).shape == (2,)


def test_mlp_matches_the_article() -> None:
    """z=100 -> 128 -> 256 -> 784 for G and 784 -> 256 -> 128 -> 1 for D."""
    cfg = ModelConfig(arch="mlp")
    G, D = build_generator(cfg, (1, 28, 28)), build_discriminator(cfg, (1, 28, 28))
    g_shapes = [tuple(m.weight.shape) for m in G.modules() if isinstance(m, torch.nn.Linear)]
    d_shapes = [tuple(m.weight.shape) for m in D.modules() if isinstance(m, torch.nn.Linear)]
    assert g_shapes == [(128, 100), (256, 128), (784, 256)]
    assert d_shapes == [(256, 784), (128, 256), (1, 128)]
    assert isinstance(list(G.modules())[-1], torch.nn.Sigmoid)


def test_dcgan_rejects_sizes_it_cannot_halve_twice() -> None:
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_generator(ModelConfig(arch="dcgan"), (1, 10, 10))
