"""The FID Inception-v3: pytorch-fid's parameter names and shapes, a strict round trip through a weights file,
the extractor's key from the file's bytes, and the extractor table."""

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from gan.config import INCEPTION_FEATURE_DIM
from gan.metrics import inception
from gan.metrics.classifier import FEATURE_DIM, Classifier, embed
from gan.metrics.extractors import EXTRACTORS, build_extractor

pytestmark = pytest.mark.usefixtures("one_thread")

# Names and shapes in pytorch-fid's pt_inception-2015-12-05-6726825d.pth (torchvision's Inception3 naming).
KNOWN = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "Mixed_7c.branch_pool.bn.bias": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
# torchvision's inception_v3 has 27,161,264 parameters with its AuxLogits head (3,326,696) and 1000 classes; the FID
# network has no aux head and 1008 classes (8 more rows of fc: 8 x 2049).
FID_INCEPTION_PARAMETERS = 27_161_264 - 3_326_696 + 8 * 2049


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[inception.FIDInceptionV3, Path]:
    """A seeded network whose activations neither vanish nor explode (unlike torch's default init through 94 layers),
    saved as the weights file is: a plain dict of tensors."""
    torch.manual_seed(0)
    network = inception.FIDInceptionV3().eval()
    for m in network.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-test.pth"
    torch.save(dict(network.state_dict()), path)
    return network, path


def test_parameter_names_shapes_and_count_are_pytorch_fids() -> None:
    state = inception.FIDInceptionV3().state_dict()
    assert {k: tuple(state[k].shape) for k in KNOWN} == KNOWN
    assert not any(k.startswith("AuxLogits") for k in state)  # the FID graph has no aux head
    assert sum(p.numel() for p in inception.FIDInceptionV3().parameters()) == FID_INCEPTION_PARAMETERS == 23_850_960
    assert INCEPTION_FEATURE_DIM == inception.FEATURE_DIM  # the config's check counts the same dimensions


def test_weights_file_loads_strict_and_gives_the_same_features(weights: tuple[inception.FIDInceptionV3, Path], tmp_path: Path) -> None:
    network, path = weights
    images = torch.rand(2, 1, 28, 28)  # greyscale MNIST-sized: repeated to RGB, resized to 299
    with torch.no_grad():
        expected = network.features(images)
    loaded = inception.load_fid_inception(path)
    feats, probs = embed(loaded, images)
    assert feats.shape == (2, 2048) and feats.dtype == probs.dtype == "float64"
    assert torch.equal(torch.from_numpy(feats).float(), expected) and feats.std() > 0.01
    assert probs.shape == (2, 1008) and abs(probs.sum(1) - 1).max() < 1e-6
    # A file saved before BatchNorm counted its batches (no num_batches_tracked) loads strictly too.
    older = {k: v for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(older, tmp_path / "older.pth")
    assert torch.equal(inception.load_fid_inception(tmp_path / "older.pth").fc.weight, network.fc.weight)


def test_uint8_and_rgb_inputs_are_scaled_as_floats() -> None:
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(inception.preprocess(x), inception.preprocess(x.float() / 255))
    grey = inception.preprocess(torch.ones(1, 1, 4, 4))
    assert grey.shape == (1, 3, 299, 299) and torch.allclose(grey, torch.ones_like(grey))  # white is 1 in [-1, 1]


def test_extractor_key_names_the_weights_files_bytes(weights: tuple[inception.FIDInceptionV3, Path]) -> None:
    _, path = weights
    extractor = build_extractor("inception", inception_weights=str(path), classifier=None, classifier_key="unused")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert extractor.key == f"inception-{digest}-bilinear299" and extractor.feature_dim == 2048 and not extractor.kid_rescale
    assert set(EXTRACTORS) == {"classifier", "selfsupervised", "inception"}


def test_a_file_that_is_not_the_state_dict_is_a_weights_error(tmp_path: Path) -> None:
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, tmp_path / "other.pth")
    for name in ("notes.pth", "other.pth"):
        with pytest.raises(inception.WeightsError, match="not the FID Inception's state dict") as err:
            inception.load_fid_inception(tmp_path / name)
        assert "\n" not in str(err.value)


def test_classifier_extractor_is_the_evaluations_classifier() -> None:
    classifier = Classifier((1, 8, 8), 10)
    extractor = build_extractor("classifier", classifier=classifier, classifier_key="abc", inception_weights=None)
    images = torch.rand(5, 1, 8, 8)
    assert extractor.key == "abc" and extractor.feature_dim == FEATURE_DIM and extractor.kid_rescale
    for ours, theirs in zip(extractor.embed(images), embed(classifier, images)):
        assert (ours == theirs).all()
