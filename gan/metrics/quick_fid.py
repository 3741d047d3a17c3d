"""QuickFID: a generator's FID against stored training statistics, cheap enough to run during training."""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gan.files import replacing
from gan.latent import Latent
from gan.metrics.classifier import Classifier, embed
from gan.metrics.fid import frechet_distance_from_stats, gaussian_stats
from gan.metrics.selfsupervised import Encoder
from gan.sampling import generate
from gan.saved import ForeignFile, load_tensors

# The feature networks a quick FID measures with, by the name its file keeps: those an evaluation can pick, but Inception
# (FID on its 2048-d features needs more than 2048 samples, each through a 299 x 299 network: too slow during training).
NETWORKS: dict[str, type[nn.Module]] = {"classifier": Classifier, "selfsupervised": Encoder}


class QuickFID:
    """FID of a generator's samples against the training images' feature statistics, cheap enough to run
    every few epochs during training (on rank 0). Conditional models draw labels in the data's class mix."""

    def __init__(
        self, network: nn.Module, mu: np.ndarray, cov: np.ndarray, class_probs: np.ndarray, samples: int, seed: int, key: str = ""
    ):
        assert type(network) in NETWORKS.values(), f"a quick FID measures with one of {sorted(NETWORKS)}, not a {type(network).__name__}"
        self.network, self.mu, self.cov = network.eval(), mu, cov  # network: the evaluation's classifier or encoder
        self.class_probs, self.samples, self.seed = class_probs, samples, seed
        self.key = key  # names the yardstick (the feature network); stored with every snapshot

    def save(self, path: Path) -> Path:
        name = next(name for name, kind in NETWORKS.items() if type(self.network) is kind)
        blob = {
            "network": name, "spec": json.dumps(self.network.spec), "state": self.network.state_dict(),
            "mu": torch.from_numpy(self.mu), "cov": torch.from_numpy(self.cov), "class_probs": torch.from_numpy(self.class_probs),
            "samples": self.samples, "seed": self.seed, "key": self.key,
        }
        with replacing(path) as tmp:
            torch.save(blob, tmp)
        return path

    @classmethod
    def load(cls, source: str | Path | bytes, where: str = "the quick-FID file") -> "QuickFID":
        """From a file saved by `save`, or its bytes (`where` names them); a file that is not one is a ForeignFile."""
        remedy = "; remove it and run again"
        blob = load_tensors(source, where, "a quick-FID file this project wrote", remedy=remedy)
        if blob.get("network") not in NETWORKS:  # written by an older version, which kept a classifier only
            raise ForeignFile(f"{where}: not a quick-FID file this version reads (feature network {blob.get('network')!r}){remedy}")
        network = NETWORKS[blob["network"]](**json.loads(blob["spec"]))
        network.load_state_dict(blob["state"])
        return cls(
            network, blob["mu"].numpy(), blob["cov"].numpy(), blob["class_probs"].numpy(), int(blob["samples"]), int(blob["seed"]), blob["key"]
        )

    def __call__(self, G: nn.Module, latent: Latent) -> float:
        gen = torch.Generator().manual_seed(self.seed)
        labels = torch.from_numpy(np.random.default_rng(self.seed).choice(len(self.class_probs), self.samples, p=self.class_probs))
        z, c = latent.sample(self.samples, gen, labels=labels)
        device = next(G.parameters()).device
        images = generate(G, z.to(device), None if c is None else c.to(device)).cpu()
        feats, _ = embed(self.network, images)
        return frechet_distance_from_stats(*gaussian_stats(feats), self.mu, self.cov)
