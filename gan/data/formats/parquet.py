"""Parquet files, one or a folder of them (as Hugging Face `datasets` exports them): a column of encoded images and an
optional label column. The images are decoded once, in parallel, into an array in scratch that is then memory-mapped."""

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from gan.data.arrays import Mapped, npy_header, take
from gan.data.errors import DataError, Problem, one_line, raise_problems
from gan.data.location import Location
from gan.data.rows import CHUNK_ROWS, Job, Reader, Rows, decode_jobs, stack_images
from gan.data.shaping import Shaping, decode_image

# What pyarrow raises on a damaged file: its own errors, an OSError, or a column name that is not UTF-8.
DAMAGED = (OSError, UnicodeDecodeError, pa.ArrowException)


def holds_parquet(entries: list[pafs.FileInfo]) -> bool:
    """Whether a folder's entries make it a Parquet folder: Parquet files and nothing else."""
    parquet = _parquet(entries)
    return bool(parquet) and len(parquet) == len(entries)


def parquet_files(location: Location) -> list[Location]:
    """The Parquet files of a source: itself, or those of its folder."""
    if location.kind() == pafs.FileType.File:
        return [location]
    return [location.child(e.path) for e in _parquet(location.listing())]


def _parquet(entries: list[pafs.FileInfo]) -> list[pafs.FileInfo]:
    return [e for e in entries if e.type == pafs.FileType.File and e.base_name.endswith(".parquet")]


def open_parquet(files: list[Location], shaping: Shaping, scratch: Path, columns: tuple[str, str], workers: int,
                 peek: bool = False) -> Rows:
    """Parquet files with an image column (encoded PNG/JPEG/WebP/BMP bytes, or a struct with a `bytes` field as
    Hugging Face datasets write) and an optional label column (integers >= 0, or strings: sorted -> 0..K-1).
    The images are decoded once, in parallel, into an array in `scratch` that is then memory-mapped."""
    image_col, label_col = columns
    tables = [_open(location) for location in files]
    labelled = label_col in tables[0].schema_arrow.names
    for location, table in zip(files, tables):  # every file of a folder holds the first one's columns
        _check_columns(table, location.path, image_col, (label_col, labelled))
    raw_labels = pa.concat_arrays([_labels_of(t, loc.path, label_col) for loc, t in zip(files, tables)]) if labelled else None
    labels, class_names = _parquet_labels(raw_labels, files[0].path, label_col, sum(t.metadata.num_rows for t in tables))

    def jobs() -> Iterator[Job]:
        start = 0
        for location, table in zip(files, tables):
            for batch in _batches(table, location.path, image_col):
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
    mapped = Mapped(*npy_header(scratch / "parquet-images.npy", 0), "nchw")
    where = files[0].uri
    # Rows that failed to decode keep their place (their label) but are never read: the reader skips them.
    bad = frozenset(np.flatnonzero(~keep).tolist())
    reader = Reader(functools.partial(_parquet_job, mapped, shaping, where, bad), decodes=False, name=lambda row: f"{where} row {row}")
    what = f"{len(class_names) or int(labels.max()) + 1} classes" if labelled else "unlabelled"
    return Rows(reader, labels, f"Parquet {where} ({len(labels)} images, {what})", class_names, labelled, tuple(problems), files[0].path)


def _open(location: Location) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(location.path, filesystem=location.fs)
    except DAMAGED as err:
        raise DataError(f"{location.path}: cannot read as Parquet ({one_line(err)})") from err


def _check_columns(table: pq.ParquetFile, path: str, image_col: str, label: tuple[str, bool]) -> None:
    """The image column, and the label column when the first file has one (and only then), or a DataError."""
    names, (label_col, labelled) = table.schema_arrow.names, label
    if image_col not in names:
        raise DataError(f"{path}: no column {image_col!r} (data.image_column); it has {', '.join(map(repr, names))}")
    if (label_col in names) != labelled:
        raise DataError(f"{path}: {'no' if labelled else 'a'} column {label_col!r} (data.label_column), unlike the folder's first file; "
                        "expected every file labelled or none")


def _labels_of(table: pq.ParquetFile, path: str, name: str) -> pa.Array:
    """The label column, as many rows as the file's footer declares, or a DataError naming the file."""
    try:
        labels = table.read(columns=[name]).column(0).combine_chunks()
    except DAMAGED as err:  # a damaged page or footer
        raise DataError(f"{path}: cannot read column {name!r} as Parquet ({one_line(err)})") from err
    _check_count(len(labels), table, path, name)
    return labels


def _batches(table: pq.ParquetFile, path: str, name: str) -> Iterator[pa.RecordBatch]:
    """The image column, CHUNK_ROWS rows at a time, as many rows as the file's footer declares (which number the rows
    and their labels); a damaged file is a DataError naming it."""
    seen = 0
    try:
        for batch in table.iter_batches(batch_size=CHUNK_ROWS, columns=[name]):
            seen += batch.num_rows
            if seen > table.metadata.num_rows:
                break
            yield batch
    except DAMAGED as err:
        raise DataError(f"{path}: cannot read column {name!r} as Parquet ({one_line(err)})") from err
    _check_count(seen, table, path, name)


def _check_count(rows: int, table: pq.ParquetFile, path: str, name: str) -> None:
    if rows != table.metadata.num_rows:
        raise DataError(f"{path}: column {name!r} holds {'more' if rows > table.metadata.num_rows else 'fewer'} rows than the file's "
                        f"footer declares ({table.metadata.num_rows}); the file is damaged")


def _parquet_job(images: Mapped, shaping: Shaping, where: str, bad: frozenset, rows: np.ndarray) -> Job:
    rows = np.array([r for r in rows if int(r) not in bad], np.int64) if bad else rows
    return functools.partial(take, images, shaping, where, rows)


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
    return stack_images(images, shaping), np.array(good, np.int64), problems


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
