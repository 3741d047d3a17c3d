"""A user's bad data: `DataError`, one line naming the file and what was expected; `Problem`, one bad input of many,
which `raise_problems` names together in one DataError."""

from dataclasses import dataclass

MAX_PROBLEMS = 5  # bad inputs named in one error message; the rest are counted


class DataError(ValueError):
    """A user's data is missing or malformed; the message names the file and what was expected."""


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
