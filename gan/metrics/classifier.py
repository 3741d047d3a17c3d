"""The feature classifier that FID, KID, precision/recall and the Inception Score read.

Standard FID/IS use an ImageNet Inception network whose weights cannot be fetched offline, and which
knows nothing of digits anyway. Here the feature network is a small CNN classifier trained on the
ingested data: FID is the Frechet distance between its penultimate features, IS uses its softmax.
The numbers are comparable between runs that share the classifier (same dataset fingerprint, same
classifier config), not with published Inception-based figures.
"""

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 128


class Classifier(nn.Module):
    """Two conv blocks and a 128-d feature layer; `features` feeds FID, `forward` gives logits for IS."""

    def __init__(self, image_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.image_shape = tuple(image_shape)
        c, h, w = image_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [32, H/2, W/2]
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [64, H/4, W/4]
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] in [0, 1] -> [N, 128]
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> logits [N, K]
        return self.head(self.features(x))


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] or floats in [0, 1] -> float tensor in [0, 1]."""
    images = torch.as_tensor(images)
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, epochs: int, seed: int, batch_size: int = 128) -> Classifier:
    """Fit the feature classifier with Adam on the training split."""
    torch.manual_seed(seed)
    model = Classifier(tuple(images.shape[1:]), num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = to_float(images), torch.as_tensor(np.array(labels, dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def embed(model: Classifier, images: np.ndarray | torch.Tensor, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, 128] float64, class probabilities [N, K] float64)."""
    model.eval()
    feats, probs = [], []
    for chunk in to_float(images).split(batch_size):
        f = model.features(chunk)
        feats.append(f.double())
        probs.append(F.softmax(model.head(f), dim=1).double())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def accuracy(model: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of images the classifier labels correctly (the yardstick's own sanity check)."""
    _, probs = embed(model, images)
    return float((probs.argmax(1) == labels).mean())


def source_digest() -> str:
    """A hash of this module's source: the classifier's cache key changes with its own code, not with every edit to `gan`."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]

