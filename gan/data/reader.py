"""A dataset read back, as the training and the evaluation read it: a split a record batch at a time (`iter_split`) or in
memory, whole or some of its rows (`load_split`); its pixel statistics; a seeded sample of its rows."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gan.data.errors import DataError
from gan.data.manifest import read_manifest


def decode_images(column: list[bytes] | np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """Raw image bytes (one per row) -> writable uint8 array [N, C, H, W]."""
    return np.frombuffer(bytearray(b"".join(column)), dtype=np.uint8).reshape(-1, *image_shape)


def iter_split(dataset_dir: Path, split: str, batch_rows: int = 2048) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One split a record batch at a time, in the order it was written: (images [n, C, H, W] uint8, labels [n] int64),
    the images copied out of the batch's bytes. One row group is read at a time (no read-ahead of the shard), so what
    is held is a row group and a batch, whatever the split's size. A split with more or fewer rows than its manifest
    says is an error."""
    manifest = read_manifest(dataset_dir)
    shape, total, done = tuple(manifest["image_shape"]), manifest["rows"][split], 0
    for name in manifest["shards"][split]:
        shard = pq.ParquetFile(Path(dataset_dir) / name, pre_buffer=False)
        for batch in (b for group in range(shard.num_row_groups)
                      for b in shard.iter_batches(batch_size=batch_rows, row_groups=[group], columns=["image", "label"])):
            done += batch.num_rows
            if done > total:
                raise DataError(f"{Path(dataset_dir) / split}: more rows than the {total} its manifest says")
            images = fixed_size_rows(batch.column("image"), int(np.prod(shape))).reshape(batch.num_rows, *shape)
            yield images.copy(), batch.column("label").to_numpy().astype(np.int64, copy=False)
    if done != total:
        raise DataError(f"{Path(dataset_dir) / split}: {done} rows; its manifest says {total}")


def load_split(dataset_dir: Path, split: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one split, or only its `rows` (indices in any order, repeats allowed), into memory: (images [N, C, H, W]
    uint8, labels [N] int64) in that order. The images are copied from each record batch's bytes straight into one
    array: no Python object per image, no copy of the rows not asked for beyond one record batch."""
    manifest = read_manifest(dataset_dir)
    shape, total = tuple(manifest["image_shape"]), manifest["rows"][split]
    wanted, order = (np.arange(total), None) if rows is None else np.unique(np.asarray(rows, np.int64), return_inverse=True)
    if len(wanted) and not 0 <= wanted[0] <= wanted[-1] < total:
        raise IndexError(f"{Path(dataset_dir) / split}: rows {wanted[0]}..{wanted[-1]} asked of {total}")
    images, labels, start = np.empty((len(wanted), *shape), np.uint8), np.empty(len(wanted), np.int64), 0
    for batch_images, batch_labels in iter_split(dataset_dir, split):
        lo, hi = np.searchsorted(wanted, (start, start + len(batch_labels)))
        pick = slice(None) if rows is None else wanted[lo:hi] - start
        images[lo:hi], labels[lo:hi] = batch_images[pick], batch_labels[pick]
        start += len(batch_labels)
    return (images, labels) if order is None else (images[order], labels[order])


def pixel_stats(dataset_dir: Path, split: str) -> dict[str, list[float]]:
    """Each channel's pixel mean and standard deviation over a split, in [0, 1], read a record batch at a time."""
    total, sums, squares = 0, 0.0, 0.0
    for images, _ in iter_split(dataset_dir, split):
        x = images.reshape(len(images), images.shape[1] if images.ndim == 4 else 1, -1).astype(np.float64) / 255.0  # [N, C, H*W]
        total, sums, squares = total + x.shape[0] * x.shape[2], sums + x.sum(axis=(0, 2)), squares + (x**2).sum(axis=(0, 2))
    mean = sums / max(total, 1)
    std = np.sqrt(np.maximum(squares / max(total, 1) - mean**2, 0.0))
    return {"mean": [round(float(m), 5) for m in np.atleast_1d(mean)], "std": [round(float(s), 5) for s in np.atleast_1d(std)]}


def sample_rows(total: int, count: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of `count` of `total` rows; every row when count is 0 or not below total."""
    if not count or count >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, count, replace=False))


def fixed_size_rows(column: pa.Array, size: int) -> np.ndarray:
    """A binary column whose values are all `size` bytes -> a [N, size] uint8 view of its data buffer."""
    if column.type == pa.large_binary():
        column = column.cast(pa.binary())
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset : column.offset + len(column) + 1]
    if len(column) and not (np.diff(offsets) == size).all():
        raise DataError(f"an image column with values of {sorted(set(np.diff(offsets).tolist()))[:5]} bytes; expected {size} each")
    data = np.frombuffer(column.buffers()[2], np.uint8) if len(column) else np.empty(0, np.uint8)
    return data[offsets[0] : offsets[-1]].reshape(len(column), size) if len(column) else data.reshape(0, size)
