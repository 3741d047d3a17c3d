"""The errors a user can act on, named once: which errors are the user's (retrying cannot help, the CLI exits 2 or 3
without a traceback), and a full or forbidden place to write named in words."""

import errno
import os
from pathlib import Path
from typing import NoReturn

from gan.config import ConfigError


class UsageError(Exception):
    """Bad input on the command line, found before any work started."""


class RegistrationRefused(Exception):
    """The watchdog found the trained model broken: it is evaluated, never registered. Retrying cannot help."""


class ClusterUnavailable(Exception):
    """The Ray cluster could not place the training workers (a node lost, or too few nodes). Retrying at once cannot help;
    a re-run once the cluster has room resumes from the latest checkpoint."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix (retrying cannot help). Imported when asked: a mistyped key should not wait
    for torch."""
    from gan.checkpoint import CheckpointError  # noqa: PLC0415
    from gan.data.errors import DataError  # noqa: PLC0415
    from gan.saved import ForeignFile  # noqa: PLC0415
    from gan.watchdog import TrainingDiverged  # noqa: PLC0415

    return ConfigError, DataError, CheckpointError, ForeignFile, RegistrationRefused, TrainingDiverged, ClusterUnavailable


# A full disk or quota, a read-only file system, a folder without write permission: a retry fails the same way.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def retry_unless_user_error(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's callback signature
    """Prefect retry condition: a missing file or a bad value fails the same way every time."""
    return not (isinstance(state.data, user_errors()) or is_storage_error(state.data))


def is_storage_error(err: object) -> bool:
    """A place to write that is full, read-only or forbidden: the user's to fix, not a bug and not worth a retry."""
    return isinstance(err, OSError) and err.errno in STORAGE_ERRNOS


def naming(err: OSError, path: object) -> OSError:
    """A copy of the error in the standard words for its errno, naming `path` unless it named a file (pyarrow's name none)."""
    return OSError(err.errno, os.strerror(err.errno) if err.errno else str(err), err.filename or str(path))


def raise_naming(err: OSError, path: object) -> NoReturn:
    """Re-raise `err` from an except block; a storage error (a full disk, say, in pyarrow's words, which name no
    file) as `naming(err, path)`."""
    if is_storage_error(err):
        raise naming(err, path) from err
    raise err


def first_line(err: BaseException) -> str:
    """An error's message, its first line only (or '' for an empty one)."""
    return (str(err).strip().splitlines() or [""])[0]


def storage_message(err: OSError) -> str:
    """A full disk, a read-only file system or a forbidden folder, naming the file and what to do."""
    where, reason = err.filename or "a file it does not name", os.strerror(err.errno).lower()
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        room = f" (df -h {Path(err.filename).parent} shows what is left)" if err.filename else ""
        return (f"{reason} writing {where}: free some space there{room} and run the same command again; finished stages "
                "are reused and training resumes from its latest saved checkpoint, if any")
    return (f"{where}: {reason}: give this user access to it or point the setting that names it (runtime.workdir, "
            "ray.storage_path, MLFLOW_TRACKING_URI) elsewhere, then run the same command again")

