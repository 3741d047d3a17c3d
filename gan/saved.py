"""Files of tensors and arrays read back, the one safe way: `torch.load(weights_only=True)` for checkpoints, caches,
yardsticks, weights and models' weights (tensors and plain containers only; nothing a pickle names is run), and
`numpy.load(allow_pickle=False)` for cached arrays. Bytes that are anything else (a pickle that would run code, a truncated
or corrupt file, another program's) are refused with an error naming the file, never with torch's advice to load it
unsafely."""

import io
import pickle
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

# The start of every pickle torch.save writes (protocol 2, its default), in a zip archive's `<name>/data.pkl` or, in the
# legacy layout, at the file's start. Another protocol is no file of ours, nor torch's by default; torch would print a
# warning about it before failing.
PICKLE_HEAD = b"\x80\x02"


class ForeignFile(ValueError):
    """A file read back is not one this project wrote: the user's to remove or replace; a retry cannot help."""


def load_tensors(source: Path | str | bytes, where: str, what: str, error: type[Exception] = ForeignFile, remedy: str = "") -> dict:
    """The dict of tensors and plain values in `source` (a file, or its bytes), or `error` saying that `where` is not
    `what` (e.g. "a checkpoint this project wrote"), then `remedy`; `where` is "" when the caller names the file. A
    missing or forbidden file stays the OSError it is."""
    try:
        with open(source, "rb") if not isinstance(source, bytes) else io.BytesIO(source) as file:
            loaded = _load(file)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - torch.load fails on foreign bytes in open-ended ways; each means "not ours"
        raise error(_refusal(where, what, _reason(err), remedy)) from None
    if not isinstance(loaded, dict):
        raise error(_refusal(where, what, f"it holds a {type(loaded).__name__}, not a dict of tensors", remedy))
    return loaded


def load_array(path: Path, what: str, remedy: str = "") -> np.ndarray:
    """The array of a .npy file (nothing unpickled), or a ForeignFile naming it as not `what`, then `remedy`."""
    try:
        return np.load(path, allow_pickle=False)
    except OSError:
        raise
    except Exception:  # noqa: BLE001 - a mangled header fails in numpy's parser, the tokenizer or ast alike
        raise ForeignFile(_refusal(str(path), what, "truncated or corrupt (numpy.load cannot read it as an array)", remedy)) from None


class _NotTorchSave(Exception):
    """The bytes are not laid out as torch.save lays them out."""


def _load(file: BinaryIO) -> object:
    """torch.load of `file`, once its pickle starts as torch.save's do (`PICKLE_HEAD`)."""
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise _NotTorchSave(f"another program's file (a zip archive with {len(pickles)} data.pkl; torch.save writes one)")
            with archive.open(pickles[0]) as data:
                head = data.read(len(PICKLE_HEAD))
    else:
        file.seek(0)
        head = file.read(len(PICKLE_HEAD))
        if not head:
            raise _NotTorchSave("empty (0 bytes)")
        if head == b"PK":
            raise _NotTorchSave("truncated or corrupt (a zip archive without its directory)")
    if head != PICKLE_HEAD:
        raise _NotTorchSave("another program's file, or corrupt (its pickle is not torch.save's, protocol 2)")
    file.seek(0)
    return torch.load(file, map_location="cpu", weights_only=True)


def _reason(err: Exception) -> str:
    """What was wrong, in words: never torch's own message, which advises loading the file unsafely."""
    if isinstance(err, _NotTorchSave):
        return str(err)
    if isinstance(err, pickle.UnpicklingError):
        return "it names Python objects beyond tensors and plain values, which could run code; nothing was loaded"
    return "truncated or corrupt (torch.load cannot read it)"


def _refusal(where: str, what: str, reason: str, remedy: str) -> str:
    return f"{f'{where}: ' if where else ''}not {what}: {reason}{remedy}"
