"""What every stage task shares: user errors that retrying cannot fix, cache keys, the test failure hook."""

import errno
import hashlib
import os

from gan.checkpoint import CheckpointError
from gan.config import ConfigError
from gan.data import DataError
from gan.watchdog import TrainingDiverged
from pipelines.config import ClusterUnavailable, RegistrationRefused


USER_ERRORS = (ConfigError, DataError, CheckpointError, RegistrationRefused, TrainingDiverged, ClusterUnavailable)  # retrying cannot help
# A full disk or quota, a read-only file system, a folder without write permission: a retry fails the same way.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
FAIL_HOOK = "GAN_PIPELINE_FAIL_AT"


class InjectedFailure(RuntimeError):
    """Raised on purpose by the test hook, to exercise retries, caching and resumption."""


def retry_unless_user_error(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's callback signature
    """Prefect retry condition: a missing file or a bad value fails the same way every time."""
    return not (isinstance(state.data, USER_ERRORS) or is_storage_error(state.data))


def is_storage_error(err: object) -> bool:
    """A place to write that is full, read-only or forbidden: the user's to fix, not a bug and not worth a retry."""
    return isinstance(err, OSError) and err.errno in STORAGE_ERRNOS


def naming(err: OSError, path: object) -> OSError:
    """A copy of the error in the standard words for its errno, naming `path` unless it named a file (pyarrow's name none)."""
    return OSError(err.errno, os.strerror(err.errno) if err.errno else str(err), err.filename or str(path))


def cache_key(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def failure_hook() -> dict[str, int | None]:
    """Parse the documented test hook, e.g. GAN_PIPELINE_FAIL_AT='train:1,evaluate'.

    `stage` fails that stage every time it runs; `train:N` makes rank 0 crash a few batches after it has
    saved the checkpoint of epoch N, once (a resumed run starts past epoch N and does not crash again);
    `kill-worker:N` makes the last rank SIGKILL its own process a few batches after epoch N's checkpoint, once.
    """
    hooks: dict[str, int | None] = {}
    for item in filter(None, (s.strip() for s in os.environ.get(FAIL_HOOK, "").split(","))):
        stage, _, arg = item.partition(":")
        hooks[stage] = int(arg) if arg else None
    return hooks


def maybe_fail(stage: str) -> None:
    """Raise InjectedFailure if the hook names this stage without an epoch."""
    hooks = failure_hook()
    if stage in hooks and hooks[stage] is None:
        raise InjectedFailure(f"{stage}: failure injected by {FAIL_HOOK}={os.environ[FAIL_HOOK]!r}")
