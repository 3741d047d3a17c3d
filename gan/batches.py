"""Training batches: an in-memory array's batches per epoch (single-process runs, tests, benchmarks), and a batch's way
onto the device as the networks' input."""

from collections.abc import Callable, Iterable

import numpy as np
import torch

from gan import distributed

Batch = tuple[torch.Tensor, torch.Tensor]  # images [N, C, H, W] (uint8, or float for vector data), labels [N] int64


def in_memory_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, rank: int = 0) -> Callable[[int], Iterable[Batch]]:
    """Batches of an array [N, ...] and its labels [N], reshuffled each epoch; for single-process runs and tests."""
    data, targets = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def epoch_batches(epoch: int) -> Iterable[Batch]:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(distributed.rank_seed(seed, rank, epoch, distributed.DATA)))
        for start in range(0, len(data) - batch_size + 1, batch_size):  # drop the last, short batch
            rows = order[start : start + batch_size]
            yield data[rows], targets[rows]

    return epoch_batches


def mirrored(epoch_batches: Callable[[int], Iterable[Batch]], seed: int, rank: int = 0) -> Callable[[int], Iterable[Batch]]:
    """The data x-flipped (data.mirror): each image of each batch mirrored left-right with probability 1/2, drawn from a
    per-(rank, epoch) generator, so a resumed run flips the same images. Doubles a photo set that may be mirrored (not
    digits, whose mirror images are no digits)."""

    def epoch(number: int) -> Iterable[Batch]:
        gen = torch.Generator().manual_seed(distributed.rank_seed(seed, rank, number, distributed.MIRROR))
        for images, labels in epoch_batches(number):
            flip = torch.rand(len(images), generator=gen) < 0.5  # [N]
            yield torch.where(flip[:, None, None, None], images.flip(3), images), labels

    return epoch


def with_mirror_images(images: np.ndarray) -> np.ndarray:
    """Images [N, C, H, W] followed by their mirror images [2N, ...]: the data distribution data.mirror trains on, as the
    evaluation's reference must hold it (a generator that learnt it draws mirrored images half the time)."""
    return np.concatenate([images, images[..., ::-1]])


def half_mirrored(images: np.ndarray) -> np.ndarray:
    """Every second image [N, C, H, W] mirrored: a held-out set drawn from the mirrored distribution (the floor under data.mirror)."""
    out = np.array(images, copy=True)
    out[::2] = out[::2, ..., ::-1]
    return out


def to_model_input(images: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """uint8 images -> floats in [0, 1] on the device (copied from pinned memory without a host sync on GPUs; a batch
    already on the device, as a benchmark keeps its data, is not copied); float data (e.g. 2-D points) as it is."""
    if device.type == "cuda" and images.device.type == "cpu":
        images = images.pin_memory()
    x = images.to(device, non_blocking=True)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
