"""Feature extraction of large image sets spread over Ray tasks; small sets are embedded in this process.

The extractor's weights go into Ray's object store once (`ray.put` of its state dict); each task rebuilds the
network from them, embeds one chunk of images and returns its features, which come back in the chunks' order.
"""

import math

import numpy as np
import torch

from gan.metrics.classifier import embed
from gan.metrics.extractors import Extractor, rebuild
from pipelines.cluster.ray import dashboard_address, ensure_ray


def embed_images(
    extractor: Extractor, images: np.ndarray | torch.Tensor, min_images: int, chunks: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The extractor's (features [N, D], softmax [N, K]), float64: in `chunks` parallel Ray tasks (default: one per CPU
    of the cluster, at most one per batch) when there are at least `min_images` images, else in this process (also when
    RAY_ADDRESS names a dashboard, which takes Ray Jobs, not tasks from this process)."""
    if len(images) < min_images or dashboard_address():
        return extractor.embed(images)
    import ray  # noqa: PLC0415 - heavy import, only for large sets

    ensure_ray()
    # No more chunks than batches, so no task gets an empty or a needlessly small one.
    parts = max(1, min(chunks or int(ray.cluster_resources().get("CPU", 1)), math.ceil(len(images) / extractor.batch_size)))
    state = ray.put(extractor.network.state_dict())
    task = ray.remote(num_cpus=1)(embed_chunk)
    refs = [
        task.remote(type(extractor.network), extractor.spec, state, chunk, extractor.batch_size)
        for chunk in torch.as_tensor(images).tensor_split(parts)
    ]
    results = ray.get(refs)  # in the order of refs, whichever task finished first
    return np.concatenate([feats for feats, _ in results]), np.concatenate([probs for _, probs in results])


def embed_chunk(
    network_type: type[torch.nn.Module], spec: dict, state: dict, images: torch.Tensor, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One Ray task: the network rebuilt from its state dict, and the chunk's (features, softmax)."""
    return embed(rebuild(network_type, spec, state), images, batch_size)
