"""What a source's files hash to: (name, sha256) of every file it reads, which names the dataset (`source_checksum`) and
tells a new version what changed; the last answer is kept while the source's listing stays the same."""

import os
import time
from pathlib import Path

import pyarrow.fs as pafs

from gan.data.formats.bundled import BUNDLED
from gan.data.location import Location
from gan.data.sources import find
from gan.hashing import sha256, sha256_file, sha256_records

SETTLED_NS = 2_000_000_000  # a file changed less than this before it was hashed is hashed again when asked again
def source_inputs(source: str) -> list[tuple[str, str]]:
    """(name within the source, sha256 of its bytes) of every file a source reads, in a fixed order.

    A run asks twice (the ingest stage's cache key, then the ingest itself): the last source's answer is kept with a
    digest of its listing (names, sizes, modification times, and for local files inode and change time, which no
    tool sets back) and reused while that is unchanged, so the bytes are read once; `forget_source_inputs` drops it.
    As in git's index, a file changed less than `SETTLED_NS` before it was hashed is not trusted to that: a second
    write within one tick of the file system's clock can leave its times as they were."""
    if source in BUNDLED:  # the package's files, by name
        located = [Location(str(path), str(path)) for path in BUNDLED[source].files()]
        files, names = [(f, f.info()) for f in located], [Path(f.path).name for f in located]
    else:
        location = find(source)
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


def source_checksum(source: str) -> str:
    """sha256 over the name (within the source) and bytes of every file the source reads: moving an image to another
    class folder relabels it, so the path counts, not just the name."""
    return inputs_checksum(source_inputs(source))


def inputs_checksum(inputs: list[tuple[str, str]]) -> str:
    """`source_checksum` from the inputs already hashed."""
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
