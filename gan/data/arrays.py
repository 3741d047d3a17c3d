"""Rows of a uint8 array: one in memory, or one stored in a file (`Mapped`: an .npy member of an .npz, an IDX file, an
unpacked copy), whose shuffled rows are gathered by coalesced reads without holding the file."""

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gan.data.errors import DataError, Problem
from gan.data.rows import Job, Reader, Rows, Source
from gan.data.shaping import Shaping, conform


def array_reader(images: np.ndarray, shaping: Shaping, where: str) -> Reader:
    """Rows of an array in memory or memory-mapped ([N, C, H, W] uint8)."""
    return Reader(functools.partial(_array_job, images, shaping, where), decodes=False, name=lambda row: f"{where} row {row}")


def _array_job(images: np.ndarray, shaping: Shaping, where: str, rows: np.ndarray) -> Job:
    return functools.partial(take, images, shaping, where, rows)


def take(images: "np.ndarray | Mapped", shaping: Shaping, where: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """A read job of an array's `rows`, in memory or stored: every one reads, shaped."""
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


def npy_header(path: Path, offset: int, length: int | None = None) -> tuple[Path, int, tuple[int, ...]]:
    """(file, data offset, shape) of the .npy array of `length` bytes (default: to the file's end) that starts at
    `offset` in `path`: C-ordered uint8 images, or a DataError. Its shape must account for exactly those bytes, so that
    reading its rows never runs past the array."""
    with open(path, "rb") as f:
        f.seek(offset)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        start = f.tell()
        end = f.seek(0, os.SEEK_END)
    if dtype != np.uint8:
        raise DataError(f"{path}: 'images' has dtype {dtype}; expected uint8 (0..255)")
    if fortran and len(shape) > 1:
        raise DataError(f"{path}: 'images' is stored in Fortran order; save numpy.ascontiguousarray(images) instead")
    size, held = int(np.prod(shape, dtype=object)), min(end, offset + length if length is not None else end) - start  # uint8: bytes
    if size != held:
        raise DataError(f"{path}: 'images' declares shape {tuple(shape)} ({size} bytes) but holds {held}")
    return path, start, tuple(shape)


def in_memory(source: Source, shaping: Shaping | None = None) -> Rows:
    """Rows of a Source already in memory (tests, benchmarks and the bundled sets)."""
    shaping = shaping or Shaping(channels=source.images.shape[1])  # as they are
    return Rows(array_reader(source.images, shaping, source.description), source.labels, source.description,
                source.class_names, source.labelled)
