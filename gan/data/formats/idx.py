"""MNIST-format IDX files: a folder of `<prefix>-images-idx3-ubyte[.gz]` files, each with its
`<prefix>-labels-idx1-ubyte[.gz]` (MNIST or Fashion-MNIST as downloaded; `train-*` and `t10k-*` are pooled); the
images memory-mapped."""

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from gan.data.arrays import Mapped, array_reader, npy_header
from gan.data.errors import UNREADABLE, DataError, one_line
from gan.data.location import Location
from gan.data.rows import Rows
from gan.data.shaping import Shaping, shaped_size

_IDX_TYPES = {0x08: np.uint8}


def holds_idx(entries: list[pafs.FileInfo]) -> bool:
    """Whether a folder's entries make it an IDX folder: any `*-images-idx3-ubyte[.gz]` file among them."""
    return any("-images-idx3-ubyte" in e.base_name for e in entries)


def idx_header(raw: bytes, path: Path | str, size: int) -> tuple[tuple[int, ...], int]:
    """(shape, header length) of an IDX file whose first bytes are `raw` and whose length is `size`."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (expected magic bytes 00 00 <type> <ndim>, got {raw[:4].hex() or 'nothing'})")
    dtype, ndim = raw[2], raw[3]
    if dtype not in _IDX_TYPES:
        raise DataError(f"{path}: IDX element type 0x{dtype:02x} is not supported; expected 0x08 (unsigned byte)")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if size - header != expected:
        raise DataError(f"{path}: IDX header declares shape {shape} ({expected} bytes) but the file holds {size - header}")
    return shape, header


def map_idx(path: Path, scratch: Path) -> Mapped:
    """One IDX images file, to be memory-mapped (a gzip-compressed one is unpacked into scratch first; messages name
    the user's file, not the copy)."""
    mapped = path
    if path.suffix == ".gz":
        mapped = scratch / path.stem
        try:
            with gzip.open(path, "rb") as src, open(mapped, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, *UNREADABLE) as err:  # a truncated or corrupt gzip stream
            raise DataError(f"{path}: cannot read ({one_line(err)}); expected an IDX file, optionally gzip-compressed") from err
    with open(mapped, "rb") as f:
        head = f.read(4 + 4 * 255)
    shape, header = idx_header(head, path, mapped.stat().st_size)
    if len(shape) != 3:
        raise DataError(f"{path}: expected 3 dimensions (count, rows, cols), got shape {shape}")
    return Mapped(str(mapped), header, shape, "nhw")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, *UNREADABLE) as err:  # a truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot read ({one_line(err)}); expected an IDX file, optionally gzip-compressed") from err
    shape, header = idx_header(raw, path, len(raw))
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def idx_pairs(directory: Path) -> list[tuple[Path, Path]]:
    """Match every `<prefix>-images-idx3-ubyte[.gz]` with its `<prefix>-labels-idx1-ubyte[.gz]`."""
    pairs = []
    for images in sorted(directory.glob("*-images-idx3-ubyte*")):
        if images.name.endswith(".gz") or images.name.endswith("-ubyte"):
            prefix, suffix = images.name.split("-images-idx3-ubyte")
            labels = [directory / f"{prefix}-labels-idx1-ubyte{s}" for s in (suffix, "", ".gz")]
            found = next((p for p in labels if p.exists()), None)
            if found is None:
                raise DataError(f"{images}: no matching labels file; expected {labels[0]}")
            pairs.append((images, found))
    if not pairs:
        raise DataError(f"{directory}: no '*-images-idx3-ubyte[.gz]' files found; expected MNIST-format IDX files")
    return pairs


def open_idx_dir(location: Location, shaping: Shaping, scratch: Path) -> Rows:
    """Every images/labels IDX pair of a folder (e.g. train-* and t10k-*), concatenated; images memory-mapped."""
    directory = Path(location.path)
    if not location.local:  # copy the folder's IDX files to scratch, then read them as local files
        directory = scratch / "idx"
        directory.mkdir(exist_ok=True)
        for entry in location.listing():
            if "-idx" in entry.base_name:
                shutil.move(location.child(entry.path).local_path(scratch), directory / entry.base_name)
    arrays, all_labels = [], []
    for images_path, labels_path in idx_pairs(directory):
        images, labels = map_idx(images_path, scratch), read_idx(labels_path)
        if labels.ndim != 1 or len(labels) != images.shape[0]:
            raise DataError(f"{labels_path}: expected {images.shape[0]} labels to match {images_path.name}, got shape {labels.shape}")
        if arrays and images.shape[1:] != arrays[0].shape[1:]:
            raise DataError(f"{images_path}: image size {images.shape[1:]} differs from {arrays[0].shape[1:]}")
        arrays.append(images)
        all_labels.append(labels)
    mapped = arrays[0]
    if len(arrays) > 1:  # several pairs: one array, written to scratch a pair at a time, mapped back
        total = sum(a.shape[0] for a in arrays)
        joined = np.lib.format.open_memmap(scratch / "idx-images.npy", "w+", np.uint8, (total, *arrays[0].shape[1:]))
        start = 0
        for array in arrays:
            joined[start:start + array.shape[0]] = array.open()[:, 0]
            start += array.shape[0]
        joined.flush()
        mapped = Mapped(*npy_header(scratch / "idx-images.npy", 0), "nhw")
        del joined
    labels = np.concatenate(all_labels).astype(np.int64)
    shaped_size(mapped.image_shape, shaping, str(directory))
    return Rows(array_reader(mapped, shaping, str(directory)), labels, f"IDX files in {location.uri} ({len(labels)} images)")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip if the name ends in .gz); used to make test fixtures."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
