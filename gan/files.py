"""Files that readers see whole or not at all: each is written to a temporary beside it, named after its writer
(`.tmp-<name>-<host>-<pid>-<random>`), synced, then published by one rename; and the clean-up of what dead writers left.

Used for datasets, reports, caches and checkpoints alike, so every temporary in a working folder reads the same and
`remove_stale_temporaries` knows them all.
"""

import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_tag() -> str:
    """Host, process and a random part: a temporary on shared storage names its writer, so cleanup elsewhere spares it."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def temp_sibling(path: Path) -> Path:
    """A hidden temporary name beside `path`, naming it and its writer: `.tmp-<name>-<host>-<pid>-<random>`."""
    path = Path(path)
    return path.parent / f".tmp-{path.name}-{temp_tag()}"


def sync(path: Path) -> None:
    """Flush a file's (or a folder's entries') writes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary name to write `path`'s new content to; then sync it and move it over `path` by one rename, so
    readers see the old file or the new, never half of one. On failure the temporary is removed and `path` untouched."""
    tmp = temp_sibling(path)
    try:
        yield tmp
        sync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, content: dict | list) -> None:
    """Write a JSON file so that readers see the old content or the new, never half of it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2))


@contextmanager
def written_aside(out_dir: Path) -> Iterator[Path]:
    """Yield a hidden sibling folder to fill; publish it as `out_dir` by one rename, or remove it on failure.

    Readers see `out_dir` either absent or complete. If another writer published first, theirs stays.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out_dir)
    tmp.mkdir()
    try:
        yield tmp
        sync(tmp)  # the files were synced as written: now their names, so a crash after the rename finds them whole
        try:
            os.rename(tmp, out_dir)
            sync(out_dir.parent)
        except OSError:
            if not out_dir.is_dir():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def scratch_space(parent: Path) -> Iterator[Path]:
    """A private folder for temporary files, removed afterwards whatever happens."""
    folder = temp_sibling(Path(parent) / "scratch")
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_temporaries(parent: Path) -> None:
    """Delete what writers on this host that are no longer running left in `parent`; another host's temporaries are left
    alone (their writer may be alive there)."""
    mine = re.compile(rf"\.tmp-.+-{re.escape(socket.gethostname())}-(\d+)-[0-9a-f]{{8}}")
    for tmp in Path(parent).glob(".tmp-*"):
        match = mine.fullmatch(tmp.name)
        if match and int(match[1]) != os.getpid() and not _alive(int(match[1])):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether a process `pid` runs on this host. One this process may not signal (another user's writer) runs too."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False
    return True
