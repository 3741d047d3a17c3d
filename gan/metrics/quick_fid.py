"""QuickFID: a generator's FID against stored training statistics, cheap enough to run during training."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from gan.files import replacing
from gan.latent import Latent
from gan.metrics.classifier import Classifier, embed
from gan.metrics.fid import frechet_distance_from_stats, gaussian_stats
from gan.sampling import generate
from gan.saved import load_tensors


class QuickFID:
    """FID of a generator's samples against the training images' feature statistics, cheap enough to run
    every few epochs during training (on rank 0). Conditional models draw labels in the data's class mix."""

    def __init__(
        self, classifier: Classifier, mu: np.ndarray, cov: np.ndarray, class_probs: np.ndarray, samples: int, seed: int, key: str = ""
    ):
        self.classifier, self.mu, self.cov = classifier.eval(), mu, cov
        self.class_probs, self.samples, self.seed = class_probs, samples, seed
        self.key = key  # names the yardstick (the feature classifier); stored with every snapshot

    def save(self, path: Path) -> Path:
        blob = {
            "classifier": self.classifier.state_dict(), "image_shape": list(self.classifier.image_shape),
            "mu": torch.from_numpy(self.mu), "cov": torch.from_numpy(self.cov), "class_probs": torch.from_numpy(self.class_probs),
            "samples": self.samples, "seed": self.seed, "key": self.key,
        }
        with replacing(path) as tmp:
            torch.save(blob, tmp)
        return path

    @classmethod
    def load(cls, source: str | Path | bytes, where: str = "the quick-FID file") -> "QuickFID":
        """From a file saved by `save`, or its bytes (`where` names them); a file that is not one is a ForeignFile."""
        blob = load_tensors(source, where, "a quick-FID file this project wrote", remedy="; remove it and run again")
        classifier = Classifier(tuple(blob["image_shape"]), len(blob["class_probs"]))
        classifier.load_state_dict(blob["classifier"])
        return cls(
            classifier, blob["mu"].numpy(), blob["cov"].numpy(), blob["class_probs"].numpy(), int(blob["samples"]), int(blob["seed"]), blob["key"]
        )

    def __call__(self, G: nn.Module, latent: Latent) -> float:
        gen = torch.Generator().manual_seed(self.seed)
        labels = torch.from_numpy(np.random.default_rng(self.seed).choice(len(self.class_probs), self.samples, p=self.class_probs))
        z, c = latent.sample(self.samples, gen, labels=labels)
        device = next(G.parameters()).device
        images = generate(G, z.to(device), None if c is None else c.to(device)).cpu()
        feats, _ = embed(self.classifier, images)
        return frechet_distance_from_stats(*gaussian_stats(feats), self.mu, self.cov)
