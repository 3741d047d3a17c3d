"""The Parquet dataset format: row-group-sized shards, a manifest, a quarantine report; written by streaming a source.

A dataset is a folder: `train/part-00000.parquet`, ..., `heldout/part-00000.parquet`, ..., `manifest.json` (which
lists the shards), `inputs.parquet` (every source file and its sha256, for incremental versions) and, when bad inputs
were skipped, `quarantine.json`. Each row is one image: `image` (raw uint8 bytes, C*H*W), `label` (int64), `index`
(row in the source). The folder appears under its final name only once complete (written aside, then renamed).
Where images come from is `gan/sources.py`.
"""

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gan.files import sync, write_json, written_aside
from gan.hashing import Digest
from gan.sources import (  # noqa: F401 - the names callers know gan.data by
    BUNDLED,
    GREY_AS_STORED,
    IMAGE_SUFFIXES,
    DataError,
    Problem,
    Rows,
    Shaping,
    Source,
    conform,
    declare_classes,
    decode_image,
    forget_source_inputs,
    idx_pairs,
    in_memory,
    inputs_checksum,
    locate,
    open_source,
    raise_problems,
    read_all,
    read_idx,
    read_image,
    read_rows,
    same_size,
    shaped_size,
    source_checksum,
    source_inputs,
    write_idx,
)

MANIFEST, QUARANTINE, INPUTS, CHANGES = "manifest.json", "quarantine.json", "inputs.parquet", "changes.json"
SPLITS = ("train", "heldout")
FORMAT_VERSION = 3  # 2: rows stored in shuffled order; 3: sharded, listed in the manifest, inputs kept
SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("index", pa.int64())])


def load_source(source: str, shaping: Shaping = GREY_AS_STORED, scratch: Path | None = None) -> Source:
    """A whole source in memory (small sources, tests, benchmarks); any bad input is an error."""
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="gan-source-", dir=scratch) as tmp:
        return read_all(open_source(source, shaping, Path(tmp)))


def peek_source(source: str, holdout_fraction: float, shaping: Shaping = GREY_AS_STORED, columns: tuple[str, str] = ("image", "label"),
                on_bad_input: str = "fail", classes: tuple[str, ...] = ()) -> tuple[tuple[int, ...], int]:
    """(image shape, approximate training rows) of a source, from its listing and its first images; with
    `on_bad_input` fail, a listing with bad inputs (stray files, empty or too small classes, classes outside
    `classes`) is an error already. Bad images themselves are found by ingest, which reads every one."""
    import tempfile  # noqa: PLC0415

    if source in BUNDLED:
        shape, rows = shaped_size(BUNDLED[source].image_shape, shaping, source), BUNDLED[source].rows
        return tuple(shape), int(rows * (1 - holdout_fraction))
    with tempfile.TemporaryDirectory(prefix="gan-source-") as tmp:
        rows, small = _drop_small_classes(declare_classes(open_source(source, shaping, Path(tmp), columns, peek=True), classes),
                                          holdout_fraction)
        if on_bad_input == "fail":
            raise_problems(list(rows.problems) + small, rows.where)
        if not len(rows):
            raise_problems(list(rows.problems), rows.where)
            raise DataError(f"data.source: {source!r} holds no images")
        images, _, bad = next(read_rows(rows, np.arange(min(len(rows), 16))))
        raise_problems([] if len(images) else bad, rows.where)
        return tuple(images[0].shape), int(len(rows) * (1 - holdout_fraction))


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


@dataclass(frozen=True)
class WriteOptions:
    """How a dataset is written: what to do with bad inputs, shard size, decoding processes, where reports go."""

    on_bad_input: str = "fail"  # "fail": nothing is written; "skip": written without them, listed in quarantine.json
    shard_mb: float = 32.0  # raw image bytes per shard
    workers: int = 1  # processes decoding image files
    report: Path | None = None  # where the quarantine report of a failed ingest goes (the dataset folder has none)
    on_shard: Callable[[str, int], None] | None = None  # after each shard is on disk: its name and its split's rows so far
    row_group_mb: float = 4.0  # raw image bytes per row group: what the writer buffers and a reader holds at once


class Shards:
    """Rows of one split, written as numbered Parquet files of `rows_per_shard` rows each, in row groups of
    `rows_per_group`: the writer buffers one row group, and so does every reader (the evaluation, Ray Data), since
    Parquet is read a row group's column at a time. The digest covers each shard's images, then its labels and
    source indices, whatever the row groups."""

    def __init__(self, folder: Path, rows_per_shard: int, on_shard: Callable[[str, int], None] | None = None,
                 rows_per_group: int | None = None) -> None:
        self.folder, self.rows_per_shard, self.on_shard = folder, rows_per_shard, on_shard
        self.rows_per_group = min(rows_per_group or rows_per_shard, rows_per_shard)
        self.buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.buffered, self.rows, self.files = 0, 0, []
        self.labels: list[np.ndarray] = []
        self.digest = Digest()
        self.writer, self.sink, self.path = None, None, folder  # the open shard's writer, file and path
        self.open_rows: list[tuple[np.ndarray, np.ndarray]] = []  # labels and indices of the open shard's row groups
        folder.mkdir()

    def add(self, images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> None:
        if len(images):
            self.buffer.append((images, labels, index))
            self.buffered += len(images)
        while self.buffered >= self.room():
            self.write_group(self.room())

    def flush(self) -> None:
        """Write what is buffered and close the last shard."""
        while self.buffered:
            self.write_group(min(self.buffered, self.room()))
        self.close_shard()

    def room(self) -> int:
        """Rows of the next row group: a whole one, or what the open shard still takes."""
        return min(self.rows_per_group, self.rows_per_shard - sum(len(labels) for labels, _ in self.open_rows))

    def write_group(self, count: int) -> None:
        images, labels, index = (np.concatenate(parts) for parts in zip(*self.buffer))
        rest = (images[count:], labels[count:], index[count:])
        self.buffer, self.buffered = ([rest], len(rest[0])) if len(rest[0]) else ([], 0)
        if self.writer is None:
            self.path = self.folder / f"part-{len(self.files):05d}.parquet"
            self.sink = pa.OSFile(str(self.path), "wb")
            self.writer = pq.ParquetWriter(self.sink, SCHEMA)
        self.writer.write_table(to_table(images[:count], labels[:count], index[:count]), row_group_size=count)
        self.digest.add(images[:count])
        self.open_rows.append((labels[:count], index[:count]))
        if not self.room():  # the shard is full
            self.close_shard()

    def close_shard(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        self.sink.close()
        sync(self.path)
        labels, index = (np.concatenate(parts) for parts in zip(*self.open_rows))
        self.digest.add(labels, index)
        self.writer, self.open_rows = None, []
        self.files.append(f"{self.folder.name}/{self.path.name}")
        self.labels.append(labels)
        self.rows += len(labels)
        if self.on_shard is not None:
            self.on_shard(self.files[-1], self.rows)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """After a failure, let go of the open shard's file unfinished (its folder is about to be removed): an open
        descriptor would keep a deleted file's space taken, and a full disk full, for as long as this process runs."""
        if kind is not None and self.writer is not None:
            self.writer.is_open = False  # no footer: the file is abandoned, not finished
            self.sink.close()
            self.writer = None


def write_dataset(source: Source | Rows, out_dir: Path, holdout_fraction: float, seed: int, checksum: str,
                  options: WriteOptions = WriteOptions(), lineage: dict | None = None,
                  inputs: list[tuple[str, str]] | None = None, changes: dict | None = None) -> dict:
    """Split, stream every row into Parquet shards (bad inputs collected on the way), write the manifest, and
    publish the folder by one rename; with bad inputs and `on_bad_input: fail`, publish nothing and say why."""
    rows = source if isinstance(source, Rows) else in_memory(source)
    rows, small = _drop_small_classes(rows, holdout_fraction)
    problems: list[Problem] = list(rows.problems) + small
    if problems and options.on_bad_input == "fail":  # known from the listing alone: stop before reading any image
        fail_with_report(problems, rows.where, options.report)
    heldout = stratified_split(rows.labels, holdout_fraction, seed)
    # Rows in seeded random order: sources often come sorted by class, and Ray Data hands each worker a contiguous
    # run of rows, so a sorted dataset would give each rank only some of the classes.
    order = np.random.default_rng(seed).permutation(len(rows))
    order = order[rows.labels[order] >= 0]  # -1: a label outside the declared classes, already a problem
    with written_aside(out_dir) as tmp, ExitStack() as open_shards:
        splits, first = None, None
        seen = SeenImages()
        for images, good, bad in read_rows(rows, order, options.workers):
            problems += bad
            images, good, first = same_size(images, good, first, rows, problems)
            if not len(good):
                continue
            image_shape = first[0]
            keep = _first_copies(images, good, seen, rows, problems)
            if problems and options.on_bad_input == "fail":
                continue  # go on reading to list every bad input, but write nothing more
            if splits is None:
                pixels = int(np.prod(image_shape))
                per_shard, per_group = (max(1, int(mb * 2**20) // pixels) for mb in (options.shard_mb, options.row_group_mb))
                splits = {name: open_shards.enter_context(Shards(tmp / name, per_shard, options.on_shard, per_group))
                          for name in SPLITS}
            for name, mask in zip(SPLITS, (~heldout[good] & keep, heldout[good] & keep)):
                splits[name].add(images[mask], rows.labels[good[mask]], good[mask])
        if problems and options.on_bad_input == "fail":
            fail_with_report(problems, rows.where, options.report)
        if splits is None:
            raise_problems(problems, rows.where)
            raise DataError(f"{rows.where}: no images")
        for shards in splits.values():
            shards.flush()
        if problems:
            write_json(tmp / QUARANTINE, quarantine_report(problems, rows.where))
        if changes is not None:
            write_json(tmp / CHANGES, changes)
        if inputs is not None:
            names, hashes = zip(*inputs) if inputs else ((), ())
            pq.write_table(pa.table({"input": list(names), "sha256": list(hashes)}), tmp / INPUTS)
        manifest = _manifest(rows, splits, image_shape, checksum, holdout_fraction, seed, len(problems), lineage)
        write_json(tmp / MANIFEST, manifest)
    return read_manifest(out_dir)


def _drop_small_classes(rows: Rows, holdout_fraction: float) -> tuple[Rows, list[Problem]]:
    """A class too small to have an image both in training and held out is a bad input (a class, not a file):
    its rows get label -1 and are never written."""
    values, counts = np.unique(rows.labels[rows.labels >= 0], return_counts=True)
    small = [(int(v), int(n)) for v, n in zip(values, counts) if not 1 <= round(n * holdout_fraction) < n]
    if not small:
        return rows, []
    need = next(n for n in range(2, 10**6) if 1 <= round(n * holdout_fraction) < n)
    problems = [Problem(f"{rows.where}: class {rows.class_names[v] if rows.class_names else v!r}",
                        f"{n} image(s); with data.holdout_fraction {holdout_fraction:g} a class needs at least {need}, "
                        "so that one is trained on and one held out") for v, n in small]
    labels = np.where(np.isin(rows.labels, [v for v, _ in small]), -1, rows.labels)
    return dataclasses.replace(rows, labels=labels), problems


class SeenImages:
    """Hashes of the images kept so far, in sorted numpy runs merged as they grow (24 bytes per image, where a
    Python set would take ten times that): duplicates are found over the whole data set in bounded memory per row."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (first hash sorted, second hash, row)

    def first_rows(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """For each image's hash pair, the row that had it before, or -1."""
        found = np.full(len(a), -1, np.int64)
        for keys, seconds, rows in self.runs:
            at = np.minimum(np.searchsorted(keys, a), len(keys) - 1)
            hit = (keys[at] == a) & (seconds[at] == b) & (found < 0)
            found[hit] = rows[at[hit]]
        return found

    def add(self, a: np.ndarray, b: np.ndarray, rows: np.ndarray) -> None:
        if not len(a):
            return
        order = np.argsort(a, kind="stable")
        self.runs.append((a[order], b[order], rows[order]))
        while len(self.runs) > 1 and 2 * len(self.runs[-1][0]) >= len(self.runs[-2][0]):  # like sizes: merge, log-many runs
            last, before = self.runs.pop(), self.runs.pop()
            joined = [np.concatenate(pair) for pair in zip(before, last)]
            order = np.argsort(joined[0], kind="stable")
            self.runs.append(tuple(x[order] for x in joined))


def _first_copies(images: np.ndarray, good: np.ndarray, seen: SeenImages, rows: Rows, problems: list[Problem]) -> np.ndarray:
    """Mask of rows whose pixels were not seen before, in earlier chunks or earlier in this one; each copy becomes a
    problem naming the first."""
    a, b = pixel_hashes(images)
    first = seen.first_rows(a, b)
    order = np.lexsort((np.arange(len(a)), b, a))  # equal images side by side, earliest first
    starts = np.r_[True, (a[order][1:] != a[order][:-1]) | (b[order][1:] != b[order][:-1])]
    leader = np.empty(len(a), np.int64)
    leader[order] = order[np.maximum.accumulate(np.where(starts, np.arange(len(a)), 0))]
    first = np.where((first < 0) & (leader != np.arange(len(a))), good[leader], first)
    keep = first < 0
    problems += [Problem(rows.reader.name(int(row)), f"the same image as {rows.reader.name(int(orig))} (a duplicate)")
                 for row, orig in zip(good[~keep], first[~keep])]
    seen.add(a[keep], b[keep], good[keep])
    return keep


def pixel_hashes(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit multiply-add hashes of each image's bytes, with fixed random odd weights per 8-byte word:
    vectorised (a Python hash per image costs more than writing the dataset), and equal for equal images."""
    flat = images.reshape(len(images), -1)
    pad = -flat.shape[1] % 8
    words = np.pad(flat, ((0, 0), (0, pad))).view(np.uint64) if pad else np.ascontiguousarray(flat).view(np.uint64)
    weights = np.random.default_rng(words.shape[1]).integers(1, 2**63, (2, words.shape[1]), dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        a, b = ((words * w).sum(axis=1, dtype=np.uint64) for w in weights)
    return a, b


def _manifest(rows: Rows, splits: dict[str, Shards], image_shape: tuple, checksum: str, holdout_fraction: float,
              seed: int, quarantined: int, lineage: dict | None) -> dict:
    labels = {name: np.concatenate(s.labels) if s.labels else np.zeros(0, np.int64) for name, s in splits.items()}
    digest = Digest(json.dumps([int(n) for n in image_shape]), *(shards.digest.raw() for shards in splits.values()))
    classes = len(rows.class_names) or int(rows.labels.max()) + 1
    return {
        "format_version": FORMAT_VERSION,
        "schema": {f.name: str(f.type) for f in SCHEMA},
        "image_shape": [int(n) for n in image_shape],
        "rows": {name: s.rows for name, s in splits.items()},
        "shards": {name: s.files for name, s in splits.items()},
        "class_counts": {name: _class_counts(values) for name, values in labels.items()},
        "num_classes": classes,
        # Label k's name; a source without names numbers them, an unlabelled one has the single class "0".
        "class_names": list(rows.class_names) or [str(k) for k in range(classes)],
        "labelled": rows.labelled,
        "source": rows.description,
        "source_checksum": checksum,
        "fingerprint": digest.hex(),
        "holdout_fraction": holdout_fraction,
        "split_seed": seed,
        "quarantined": quarantined,
        "created": time.time(),
        **(lineage or {}),
    }


def quarantine_report(problems: list[Problem], where: str) -> dict:
    return {"source": where, "count": len(problems), "inputs": [{"input": p.input, "reason": p.reason} for p in problems]}


def fail_with_report(problems: list[Problem], where: str, report: Path | None) -> None:
    """Write the quarantine report (when there is a place for it) and raise one DataError naming the first problems."""
    if report is not None:
        write_json(report, quarantine_report(problems, where))
    raise_problems(problems, where, str(report) if report is not None else "")


def to_table(images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> pa.Table:
    """Rows of raw image bytes: one fixed-size buffer view, no copy per image."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(flat.shape[1]), len(flat), [None, pa.py_buffer(flat)]).cast(pa.binary())
    return pa.table({"image": column, "label": labels.astype(np.int64), "index": index.astype(np.int64)}, schema=SCHEMA)


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


def read_inputs(dataset_dir: Path) -> dict[str, str]:
    """{input name: sha256} of the source files a dataset was made from ({} for one written before inputs were kept)."""
    path = Path(dataset_dir) / INPUTS
    if not path.is_file():
        return {}
    table = pq.read_table(path)
    return dict(zip(table.column("input").to_pylist(), table.column("sha256").to_pylist()))
