"""Content hashes, one way: the sha256 of bytes, text (UTF-8), arrays (their C-order bytes), files, records and JSON
values, as hex. Caches, dataset names and registry tags are keyed by these values, so what each one feeds in is fixed;
a caller that names things by a prefix of the hex cuts it itself."""

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

BLOCK = 1 << 20  # bytes read from a file at a time


class Digest:
    """A sha256 fed in parts (bytes, text or arrays), for what is hashed as it streams past."""

    def __init__(self, *parts: Any) -> None:
        self._sha = hashlib.sha256()
        self.add(*parts)

    def add(self, *parts: Any) -> "Digest":
        for part in parts:
            self._sha.update(_buffer(part))
        return self

    def raw(self) -> bytes:
        return self._sha.digest()

    def hex(self) -> str:
        return self._sha.hexdigest()


def sha256(*parts: Any) -> str:
    """The hex sha256 of the parts one after the other."""
    return Digest(*parts).hex()


def sha256_json(value: Any) -> str:
    """The hex sha256 of a JSON value written with sorted keys: equal dicts hash equal whatever their order."""
    return sha256(json.dumps(value, sort_keys=True))


def sha256_records(records: Iterable[tuple[str, str]]) -> str:
    """The hex sha256 of (name, value) records, each written `name<US>value<RS>` so that no two lists run together."""
    return Digest(*(f"{name}\x1f{value}\x1e" for name, value in records)).hex()


def sha256_file(file: Path | str | BinaryIO) -> str:
    """The hex sha256 of a file's bytes, read a block at a time: a path, or a stream open for reading (a pyarrow one too)."""
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            return sha256_file(f)
    digest = Digest()
    for block in iter(lambda: file.read(BLOCK), b""):
        digest.add(block)
    return digest.hex()


def _buffer(part: Any) -> Any:
    if isinstance(part, str):
        return part.encode()
    if isinstance(part, (bytes, bytearray, memoryview)):
        return part
    import numpy as np  # noqa: PLC0415 - loaded already wherever an array is hashed; the config's keys need none

    return np.ascontiguousarray(part).reshape(-1).view(np.uint8)  # [bytes]: no copy of a contiguous array
