"""Feature extractors by name: the network whose features FID, KID, precision/recall, density/coverage and
feature memorisation read, and whose softmax the Inception Score reads.

- classifier: the small CNN trained on the data's labels (classifier.py); its key is the evaluation's classifier key
- selfsupervised: the conv encoder trained on the training images without labels (selfsupervised.py); no softmax, so
  the evaluation's Inception Score reads the domain classifier's; its key names its data, settings and code
- inception: the FID Inception-v3 from a local weights file (inception.py); its key names the file's digest

An extractor's `key` goes into every report: scores are comparable only between equal keys. Adding an
extractor is a module and a row of EXTRACTORS.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gan.hashing import sha256_file
from gan.metrics.classifier import FEATURE_DIM, Classifier, embed
from gan.metrics.inception import FEATURE_DIM as INCEPTION_DIM
from gan.metrics.inception import PREPROCESSING, load_fid_inception
from gan.metrics.selfsupervised import FEATURE_DIM as ENCODER_DIM
from gan.metrics.selfsupervised import Encoder


@dataclass(frozen=True)
class Extractor:
    """A feature network and what a report and a Ray task need to know of it. `embed` is classifier.embed, which
    reads any network with `features` and, if it has classes, `head` (Classifier, FIDInceptionV3; Encoder has none)."""

    name: str  # a row of EXTRACTORS
    key: str  # written into every report as `feature_extractor`
    network: nn.Module  # `features(images [N, C, H, W] in [0, 1]) -> [N, D]`, `head(features) -> logits [N, K]` or no head
    spec: dict  # the network's constructor arguments: with its state dict, enough to rebuild it (in a Ray task)
    feature_dim: int
    batch_size: int  # images per forward pass
    kid_rescale: bool  # KID divides the features by the reference's RMS (see kid.kid); False for order-1 features

    def embed(self, images: np.ndarray | torch.Tensor, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(features [N, D] float64, softmax [N, K] float64; K = 0 without a head), `batch_size` images at a time."""
        return embed(self.network, images, batch_size or self.batch_size)


def from_classifier(*, classifier: Classifier, classifier_key: str, **_: object) -> Extractor:
    """The domain classifier's 128-d features; `classifier_key` names it (its data, settings and code)."""
    return Extractor("classifier", classifier_key, classifier.eval(), dict(classifier.spec), FEATURE_DIM, batch_size=500, kid_rescale=True)


def from_encoder(*, encoder: Encoder, encoder_key: str, **_: object) -> Extractor:
    """The self-supervised encoder's 128-d features; `encoder_key` names it (its data, settings and code)."""
    return Extractor("selfsupervised", encoder_key, encoder.eval(), dict(encoder.spec), ENCODER_DIM, batch_size=500, kid_rescale=True)


def from_inception_weights(*, inception_weights: str | Path, **_: object) -> Extractor:
    """The FID Inception's pool3 features; its key names the weights file's bytes and the resize protocol.
    Raises inception.WeightsError when the file is not the network's state dict."""
    path = Path(inception_weights).expanduser()
    network = load_fid_inception(path)
    # Inception's pool3 features are of order 1, as KID's cubic kernel assumes: KID stays the published one.
    return Extractor("inception", inception_key(path), network, {}, INCEPTION_DIM, batch_size=50, kid_rescale=False)


def inception_key(path: Path) -> str:
    """'inception-<first 12 hex of the file's sha256>-<preprocessing>'; pytorch-fid's file starts 6726825d."""
    return f"inception-{sha256_file(path)[:12]}-{PREPROCESSING}"


EXTRACTORS: dict[str, Callable[..., Extractor]] = {
    "classifier": from_classifier, "selfsupervised": from_encoder, "inception": from_inception_weights,
}


def build_extractor(name: str, **sources: object) -> Extractor:
    """The extractor `name`, each builder taking what it needs of `sources` (classifier, classifier_key, encoder, encoder_key,
    inception_weights)."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; known: {', '.join(sorted(EXTRACTORS))}")
    return EXTRACTORS[name](**sources)


def rebuild(network_type: type[nn.Module], spec: dict, state: dict) -> nn.Module:
    """A network from its constructor arguments and state dict, in eval mode: how a Ray task gets the extractor."""
    network = network_type(**spec)
    network.load_state_dict(state)
    return network.eval()
