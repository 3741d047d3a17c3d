"""The dataset writer: a source's rows split (stratified, seeded) and shuffled, each image checked as it is read
(decodes, size, duplicate), streamed into row-group-sized Parquet shards with the manifest last, and the folder published
by one rename; with bad inputs and `on_bad_input: fail`, nothing is published and the quarantine report says why."""

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gan.data.arrays import in_memory
from gan.data.dedup import SeenImages, first_copies
from gan.data.errors import DataError, Problem, raise_problems
from gan.data.manifest import CHANGES, INPUTS, MANIFEST, QUARANTINE, SCHEMA, SPLITS, manifest_of, quarantine_report, read_manifest
from gan.data.rows import Rows, Source, drop_small_classes, read_rows, same_size
from gan.files import sync, write_json, written_aside
from gan.hashing import Digest


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
    rows, small = drop_small_classes(rows, holdout_fraction)
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
            keep = first_copies(images, good, seen, rows, problems)
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
        manifest = manifest_of(rows, splits, image_shape, checksum, holdout_fraction, seed, len(problems), lineage)
        write_json(tmp / MANIFEST, manifest)
    return read_manifest(out_dir)


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
