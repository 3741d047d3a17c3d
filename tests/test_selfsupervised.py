"""The self-supervised yardstick (gan/metrics/selfsupervised.py): its loss falls, its features are deterministic at every
image size, it ranks degraded real images below real ones on scikit-learn's 8x8 digits, and a yardstick measuring with
it is saved and rebuilt whole (yardstick.pt and the quick-FID file)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan.data.sources import load_source
from gan.metrics.classes import class_histogram
from gan.metrics.classifier import Classifier, embed
from gan.metrics.evaluation import Reference, embed_set
from gan.metrics.extractors import build_extractor
from gan.metrics.quick_fid import QuickFID
from gan.metrics.selfsupervised import Encoder, nt_xent, train_encoder, view
from pipelines import yardstick
from pipelines.config import load_config
from tests.benchmarks.yardstick_ranking import blurred, repeated

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_source("bundled-digits").images  # [1797, 1, 8, 8] uint8


def test_the_nt_xent_loss_falls_over_a_short_training(digits: np.ndarray) -> None:
    losses: list[float] = []
    train_encoder(digits[:256], epochs=4, seed=0, batch_size=64, losses=losses)
    assert len(losses) == 4 and all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.3, losses
    # The loss's known points: partners identical and all else orthogonal -> near 0; all projections equal -> log(2B - 1).
    z = torch.eye(8)[:4].repeat(2, 1)
    assert float(nt_xent(z, 0.05)) < 1e-6 and float(nt_xent(torch.ones(8, 3), 0.5)) == pytest.approx(np.log(7))


def test_training_is_reproducible_from_its_seed(digits: np.ndarray) -> None:
    a, b = (train_encoder(digits[:128], epochs=1, seed=3, batch_size=64) for _ in range(2))
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(a.features(x), b.features(x))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("side", [8, 28, 32, 64, 128])
def test_features_are_deterministic_and_128_wide_at_every_size(side: int, channels: int) -> None:
    torch.manual_seed(0)
    encoder = Encoder((channels, side, side)).eval()
    x = torch.rand(2, channels, side, side)
    with torch.no_grad():
        first, again = encoder.features(x), encoder.features(x)
        assert first.shape == (2, 128) and torch.equal(first, again) and torch.isfinite(first).all()
        if side > 64:  # average-pooled down to 64 px inside `features`
            assert torch.allclose(first, encoder.features(F.avg_pool2d(x, side // 64)), atol=1e-6)
    views = view(x, torch.Generator().manual_seed(0))
    assert views.shape == x.shape and 0 <= views.min() and views.max() <= 1


def test_the_encoder_has_no_softmax_and_the_inception_score_reads_the_classifiers() -> None:
    torch.manual_seed(0)
    encoder, classifier = Encoder((1, 8, 8)), Classifier((1, 8, 8), 10).eval()
    extractor = build_extractor("selfsupervised", encoder=encoder, encoder_key="e1")
    images = torch.rand(5, 1, 8, 8)
    feats, probs = extractor.embed(images)
    assert feats.shape == (5, 128) and probs.shape == (5, 0)
    embedded = embed_set(extractor, classifier, images)
    assert (embedded.probs == embed(classifier, images)[1]).all() and (embedded.classes == embedded.probs).all()


def test_the_encoder_ranks_degraded_images_below_real_ones(digits: np.ndarray) -> None:
    """FID on a few epochs' encoder: held-out real images score below the same images blurred, and below a collapse to a
    handful of images repeated."""
    encoder = train_encoder(digits[:1200], epochs=4, seed=0)
    extractor = build_extractor("selfsupervised", encoder=encoder, encoder_key="e1")
    reference = Reference.of(extractor.embed(digits[:1200])[0], np.ones(1))
    heldout = digits[1200:1700]
    fid = {name: reference.fid(extractor.embed(images)[0])
           for name, images in {"real": heldout, "blurred": blurred(heldout, 1.0), "collapsed": repeated(heldout, 5, 0)}.items()}
    assert fid["real"] < fid["blurred"] / 3 and fid["real"] < fid["collapsed"] / 3, fid


def test_a_yardstick_of_the_encoder_is_saved_and_measures_again(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder, classifier = Encoder((1, 8, 8), width=8), Classifier((1, 8, 8), 10).eval()
    for module in encoder.modules():  # running statistics that are not the defaults, so that a lost buffer shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
    extractor = build_extractor("selfsupervised", encoder=encoder, encoder_key="selfsupervised-e1")
    images = np.random.default_rng(0).integers(0, 256, (200, 1, 8, 8), dtype=np.uint8)
    embedded = embed_set(extractor, classifier, images)
    reference = Reference.of(embedded.feats, class_histogram(embedded.classes), extractor.kid_rescale)
    measure = yardstick.Yardstick(extractor.key, "d" * 64, 200, 0, (1, 8, 8), tuple(map(str, range(10))))
    saved = yardstick.Instrument(measure, extractor, classifier, reference, np.full(10, 0.1))
    loaded = yardstick.Instrument.load(saved.save(tmp_path / "yardstick.pt"))
    assert loaded.extractor.name == "selfsupervised" and loaded.extractor.key == extractor.key and loaded.yardstick == measure
    assert loaded.extractor.spec == {"image_shape": (1, 8, 8), "width": 8, "projection_dim": 64}
    fake = np.random.default_rng(1).integers(0, 256, (200, 1, 8, 8), dtype=np.uint8)
    assert saved.score(saved.embed(fake, 10**9), 0.01) == loaded.score(loaded.embed(fake, 10**9), 0.01)

    # The quick FID carries the encoder too, and measures with the very same features.
    quick = QuickFID(encoder, reference.mu, reference.cov, np.full(10, 0.1), 200, 0, extractor.key)
    again = QuickFID.load(quick.save(tmp_path / "quick.pt"))
    assert isinstance(again.network, Encoder) and again.key == extractor.key
    assert (embed(again.network, fake)[0] == embed(encoder, fake)[0]).all()


def test_the_encoder_is_named_by_its_data_settings_and_code_and_differs_from_the_classifier(tmp_path: Path) -> None:
    manifest = {"fingerprint": "data", "rows": {"train": 100}, "num_classes": 2}
    cfg = load_config(None, [f"runtime.workdir={tmp_path}"])
    key = yardstick.encoder_key(cfg, manifest)
    assert key != yardstick.feature_extractor_key(cfg, manifest)
    assert key != yardstick.encoder_key(load_config(None, ["eval.ssl_epochs=3"]), manifest)
    assert key != yardstick.encoder_key(cfg, {**manifest, "fingerprint": "other"})
    # Quick FIDs measure with the evaluation's network: the encoder for 2 classes, the classifier for 10.
    assert yardstick.quick_fid_extractor(cfg, manifest) == ("selfsupervised", key)
    assert yardstick.quick_fid_extractor(cfg, {**manifest, "num_classes": 10}) == ("classifier", yardstick.feature_extractor_key(cfg, manifest))
    keys = {yardstick.Yardstick(k, "d", 10, 0, (1, 8, 8), ("0", "1")).key for k in (key, yardstick.feature_extractor_key(cfg, manifest))}
    assert len(keys) == 2


@pytest.mark.parametrize("network", ["classifier", "encoder"])
def test_both_feature_networks_read_images_above_64_px_pooled_down(network: str) -> None:
    """The classifier and the encoder see a 128 px image as its 2 x 2 average at 64 px: the same features for both, so a
    128 px yardstick costs what a 64 px one does (gan.metrics.classifier.shrunk)."""
    torch.manual_seed(0)
    big = Classifier((3, 128, 128), 2) if network == "classifier" else Encoder((3, 128, 128))
    small = Classifier((3, 64, 64), 2) if network == "classifier" else Encoder((3, 64, 64))
    small.load_state_dict(big.state_dict())  # the same weights fit both: the 128 px network holds a 64 px one
    x = torch.rand(4, 3, 128, 128)
    torch.testing.assert_close(big.eval().features(x), small.eval().features(torch.nn.functional.avg_pool2d(x, 2)))
