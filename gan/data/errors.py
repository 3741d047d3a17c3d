"""A user's bad data: `DataError`, one line naming the file and what was expected; `Problem`, one bad input of many,
which `raise_problems` names together in one DataError."""

import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass

# What reading a damaged or foreign file raises besides OSError: gzip and zip (a truncated stream, bad deflate data, a bad
# CRC, an encrypted or unknown compression method: RuntimeError and NotImplementedError), struct unpacking and numpy's
# .npy header parser (a ValueError, or the tokenizer's and ast's own errors for a mangled header).
UNREADABLE = (EOFError, ValueError, struct.error, zlib.error, zipfile.BadZipFile, RuntimeError, NotImplementedError, tokenize.TokenError,
              SyntaxError)
MAX_PROBLEMS = 5  # bad inputs named in one error message; the rest are counted


class DataError(ValueError):
    """A user's data is missing or malformed; the message names the file and what was expected."""


def one_line(err: BaseException) -> str:
    """A library's message for a DataError, its lines joined (pyarrow's and zlib's may span several)."""
    return " ".join(str(err).split())


@dataclass(frozen=True)
class Problem:
    """One bad input: which file (or file and row) and what is wrong with it."""

    input: str
    reason: str

    def __str__(self) -> str:
        return f"{self.input}: {self.reason}"


def raise_problems(problems: list[Problem], where: str, report: str = "") -> None:
    """One DataError naming the first few problems and counting the rest, if there are any."""
    if not problems:
        return
    listed = f"; every one is listed in {report}" if report else ""
    if len(problems) == 1:
        raise DataError(f"{problems[0]}{listed}")
    more = f"; and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
    raise DataError(f"{where}: {len(problems)} bad inputs: " + "; ".join(map(str, problems[:MAX_PROBLEMS])) + more + listed)
