"""Networks: shapes and ranges for every arch, image size and label mode; spectral norm; the article's MLP;
DCGAN depth; the projection discriminator's defining property; conditional generators use their label."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gan.config import ModelConfig
from gan.latent import Latent
from gan.networks import ARCHS, DOut, build_discriminator, build_generator

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(z_dim=8, g_width=4, d_width=4, g_hidden=[16], d_hidden=[16], conditional=False, spectral_norm=False)
MODES = {
    "unconditional": dict(),
    "conditional": dict(conditional=True),
    "infogan": dict(info_categorical=10, info_continuous=2),
}


def build(arch: str, image_shape: tuple[int, ...], mode: str = "unconditional", **overrides) -> tuple[nn.Module, nn.Module, Latent]:
    cfg = ModelConfig(arch=arch, **{**TINY, **MODES[mode], **overrides})
    torch.manual_seed(0)
    latent = Latent.of(cfg, num_classes=10)
    return build_generator(cfg, image_shape, latent), build_discriminator(cfg, image_shape, latent), latent


def sampled(latent: Latent, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    return latent.sample(n, torch.Generator().manual_seed(seed))


def test_the_table_holds_the_three_archs() -> None:
    assert set(ARCHS) == {"mlp", "dcgan", "resnet"}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 64, 64), (3, 128, 128)])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_shapes_ranges_and_heads(arch: str, image_shape: tuple[int, ...], mode: str) -> None:
    G, D, latent = build(arch, image_shape, mode)
    z, c = sampled(latent, 3)
    assert z.shape == (3, 8 + (12 if mode == "infogan" else 0)) and (c is not None) == (mode == "conditional")
    images = G(z, c)
    assert images.shape == (3, *image_shape)
    assert images.min() >= 0 and images.max() <= 1  # like the data
    out = D(images, c)
    assert isinstance(out, DOut)
    assert out.logits.shape == (3,) and out.features.dim() == 2 and len(out.features) == 3
    assert D.linear.in_features == out.features.shape[1]
    if mode == "infogan":
        assert out.q.shape == (3, 12)  # 10 categorical logits + 2 continuous means
    else:
        assert out.q is None


def layers_on_the_logit_path(D: nn.Module) -> list[nn.Module]:
    """Every conv / linear / embedding that shapes D's logit; the InfoGAN Q head only reads features."""
    q_head = set(D.q.modules()) if D.q is not None else set()
    return [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)) and m not in q_head]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_spectral_norm_wraps_every_layer_and_bounds_its_singular_value(arch: str) -> None:
    _, D, latent = build(arch, (1, 8, 8), "conditional", spectral_norm=True)
    layers = layers_on_the_logit_path(D)
    assert len(layers) >= 3  # body, logit, embedding
    for m in layers:
        assert parametrize.is_parametrized(m, "weight"), f"{m} has no spectral norm"
        assert type(m.parametrizations.weight[0]).__name__ == "_SpectralNorm"
    D.train()  # one power iteration per forward; power iteration converges as fast as the spectral gap allows
    x, c = torch.rand(4, 1, 8, 8), torch.arange(4)
    for _ in range(50):
        D(x, c)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(sigma.item() - 1) < 2e-2, f"{m}: largest singular value {sigma.item():.4f}"
    _, plain, _ = build(arch, (1, 8, 8), "conditional")
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())


def test_mlp_matches_the_article() -> None:
    """z=100 -> 128 -> 256 -> 784 (sigmoid) for G and 784 -> 256 -> 128 -> 1 for D."""
    cfg = ModelConfig(arch="mlp", conditional=False, spectral_norm=False)
    latent = Latent.of(cfg, num_classes=10)
    G, D = build_generator(cfg, (1, 28, 28), latent), build_discriminator(cfg, (1, 28, 28), latent)
    g_shapes = [tuple(m.weight.shape) for m in G.modules() if isinstance(m, nn.Linear)]
    d_shapes = [tuple(m.weight.shape) for m in D.modules() if isinstance(m, nn.Linear)]
    assert g_shapes == [(128, 100), (256, 128), (784, 256)]
    assert d_shapes == [(256, 784), (128, 256), (1, 128)]
    assert isinstance(list(G.modules())[-1], nn.Sigmoid)


def test_mlp_on_vector_data_is_unbounded() -> None:
    G, D, latent = build("mlp", (2,))
    assert not any(isinstance(m, nn.Sigmoid) for m in G.modules())
    points = G(*sampled(latent, 256))
    assert points.shape == (256, 2)
    assert (points < 0).any()  # a sigmoid would keep them in [0, 1]
    assert D(points).logits.shape == (256,)


@pytest.mark.parametrize("size, start, upsamplings", [(28, 7, 2), (32, 4, 3), (64, 4, 4), (128, 4, 5)])
def test_dcgan_depth_follows_the_image_size(size: int, start: int, upsamplings: int) -> None:
    G, D, latent = build("dcgan", (1, size, size))
    assert G.start == (4 * 2**upsamplings, start, start)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in G.modules()) == upsamplings
    assert sum(isinstance(m, nn.Conv2d) for m in D.modules()) == upsamplings  # D halves as often as G doubles
    out = D(G(*sampled(latent, 2)))
    assert out.features.shape == (2, 4 * 2 ** (upsamplings - 1) * start * start)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_widths_double_as_the_image_halves_up_to_the_channel_cap(arch: str) -> None:
    """At 128 px with widths 16 and a cap of 64: G's channels 16, 32, 64, 64, 64, 64 from the image down, D's 16, 32, 64, 64, 64."""
    G, D, _ = build(arch, (3, 128, 128), g_width=16, d_width=16, max_channels=64)
    assert G.start == (64, 4, 4)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert max(m.out_channels for m in convs) == 64 and min(m.out_channels for m in convs) == 16
    g_convs = [m for m in G.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert max(m.out_channels for m in g_convs) == 64


@pytest.mark.parametrize(("side", "widths"), [(28, (16, 64)), (32, (16, 64)), (64, (16, 32)), (128, (16, 16)), (256, (16, 16))])
def test_auto_widths_follow_the_image_size(side: int, widths: tuple[int, int]) -> None:
    """'auto' widths (gan/recommended.py): D's first width halves per doubling of the side beyond 32 px, at least 16; what
    the builders read, so a saved generator with 'auto' rebuilds from its config and shape alone."""
    cfg = ModelConfig(arch="dcgan", conditional=False)
    assert (cfg.g_width, cfg.d_width) == ("auto", "auto")
    G, D = build_generator(cfg, (3, side, side), Latent.of(cfg, 1)), build_discriminator(cfg, (3, side, side), Latent.of(cfg, 1))
    first = next(m for m in D.modules() if isinstance(m, nn.Conv2d))
    assert first.out_channels == widths[1]
    assert G.up[-2].in_channels == 2 * widths[0]  # the last transposed conv reads g_width x 2 channels


@pytest.mark.parametrize("arch", list(ARCHS))
def test_projection_term_is_embedding_dot_features(arch: str) -> None:
    """Miyato & Koyama's projection discriminator: D(x, c) = linear(h) + <embed(c), h>."""
    _, D, _ = build(arch, (1, 8, 8), "conditional")
    D.eval()
    x, c = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        out = D(x, c)
        other = D(x, (c + 1) % 10)
        projection = (D.embed(c) * out.features).sum(1)
        D.embed.weight.zero_()
        without = D(x, c)
    assert not torch.allclose(out.logits, other.logits)  # the label matters
    assert torch.equal(without.features, out.features)
    torch.testing.assert_close(out.logits - without.logits, projection)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_conditional_generator_uses_its_label(arch: str) -> None:
    G, _, latent = build(arch, (1, 8, 8), "conditional")
    for m in G.modules():  # resnet's conditional BatchNorm starts as the identity for every class
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight)
    G.eval()
    z, c = sampled(latent, 4)
    with torch.no_grad():
        same, changed = G(z, c), G(z, (c + 1) % 10)
    assert torch.equal(same, G(z, c).detach())
    assert (same - changed).abs().flatten(1).amax(1).min() > 1e-4  # every image changes with its label
