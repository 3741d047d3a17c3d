"""The errors a user can act on, named once: which errors are the user's, each with the exit code the CLI ends with (one
line, no traceback); the retry rule retries none of them. And a full or forbidden place to write named in words."""

import errno
import importlib
import os
from pathlib import Path
from typing import NoReturn

from gan.config import ConfigError  # noqa: F401 - a user error of the list below, and the one tests check the wording of


class UsageError(Exception):
    """Bad input on the command line, found before any work started."""


class RegistrationRefused(Exception):
    """The watchdog found the trained model broken: it is evaluated, never registered. Retrying cannot help."""


class InvalidScores(Exception):
    """An evaluation report whose scores the promotion gate cannot compare (a NaN FID, a negative spread): the model is
    never registered on them. Retrying cannot help; evaluating again, or the model's samples, may."""


class ClusterUnavailable(Exception):
    """The Ray cluster could not place the training workers (a node lost, or too few nodes). Retrying at once cannot help;
    a re-run once the cluster has room resumes from the latest checkpoint."""


# The exit codes of the user's errors (1 is a failed pipeline, 130 an interrupted command; docs/pipeline.md#exit-codes).
INPUT, UNFIT, NO_ROOM = 2, 3, 4  # the input is wrong; the model is unfit to register; the cluster has no room for now

# The errors that are the user's to fix, which retrying cannot help, each with its exit code. Named by module and class:
# imported only when asked, since a mistyped key should not wait for torch.
USER_ERRORS = {
    "gan.config.ConfigError": INPUT,
    "pipelines.errors.UsageError": INPUT,
    "gan.data.errors.DataError": INPUT,
    "gan.checkpoint.CheckpointError": INPUT,
    "gan.saved.ForeignFile": INPUT,
    "pipelines.errors.RegistrationRefused": UNFIT,
    "pipelines.errors.InvalidScores": UNFIT,
    "gan.watchdog.TrainingDiverged": UNFIT,
    "pipelines.errors.ClusterUnavailable": NO_ROOM,
}


def user_errors() -> tuple[type[BaseException], ...]:
    """The classes of USER_ERRORS, imported."""
    return tuple(getattr(importlib.import_module(module), kind) for module, _, kind in (n.rpartition(".") for n in USER_ERRORS))


def exit_code(err: BaseException) -> int | None:
    """The CLI's exit code for a user's error (its most specific class in USER_ERRORS; a place to write that is full or
    forbidden is one too: INPUT); None for any other error, which failed the pipeline."""
    if is_storage_error(err):
        return INPUT
    names = (f"{kind.__module__}.{kind.__qualname__}" for kind in type(err).__mro__)
    return next((USER_ERRORS[name] for name in names if name in USER_ERRORS), None)


# A full disk or quota, a read-only file system, a folder without write permission: a retry fails the same way.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def retry_unless_user_error(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's callback signature
    """Prefect retry condition: a missing file or a bad value fails the same way every time."""
    return exit_code(state.data) is None


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

