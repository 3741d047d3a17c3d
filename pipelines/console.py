"""The user's terminal: progress bars for training and evaluation, and Ray's own chatter kept in a log file.

Ray forwards every line its processes print to the driver. Without `--verbose` only the pipeline's own
lines (`[train] ...`, `[watchdog] ...`) get through, as Prefect log lines of the running task (so every
epoch is one line in the Prefect log); everything Ray forwards, deprecation warnings and worker tracebacks
included, goes to the run's log file, whose path the CLI names when a run fails. Nothing is dropped.
Used by the CLI only: the library and the tests that call stages directly keep Ray's default printing.
"""

import logging
import re
from collections import Counter
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

OURS = ("[train]", "[watchdog]")  # the prefixes of the lines the training function prints for the user
# Lines Ray repeats every second that say nothing new after the first: the log file gets the first and every hundredth.
REPEATED = ("Failed to query Ray Train Controller actor state",)  # Ray Train's placement-group cleaner, without the dashboard
EPOCH = re.compile(r"\[train\] epoch (\d+)/(\d+) step (\d+) .* (\d+) img/s")


@dataclass
class Settings:
    verbose: bool = True  # Ray's default printing, until the CLI says otherwise
    log_file: Path | None = None


SETTINGS = Settings()
_task_logger: list[logging.Logger | logging.LoggerAdapter] = []  # the Prefect logger of the running train task, if any
_bar: list["Bar"] = []  # the live progress bar, if any
_lock = threading.RLock()
_repeats: Counter = Counter()


def configure(verbose: bool, log_file: Path) -> None:
    """Called by the CLI before any service starts."""
    SETTINGS.verbose, SETTINGS.log_file = verbose, log_file
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if not verbose:
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")


class LogFile:
    """A stream that appends to the run's log file: where the libraries' own chatter goes without --verbose."""

    def write(self, text: str) -> int:
        if SETTINGS.log_file is not None and text.strip():
            with _lock, SETTINGS.log_file.open("a") as log:
                log.write(text if text.endswith("\n") else text + "\n")
        return len(text)

    def flush(self) -> None:
        pass


def into_log_file(*names: str) -> None:
    """Without --verbose: what the named loggers (and those under them) print goes to the run's log file instead, whether
    or not the output is a terminal (e.g. Ray Data's "Estimated parquet encoding ratio", "tqdm is not installed")."""
    if SETTINGS.verbose or SETTINGS.log_file is None:
        return
    under = [n for n in list(logging.root.manager.loggerDict) if n.startswith(tuple(f"{name}." for name in names))]
    terminal = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    for logger in map(logging.getLogger, [*names, *under]):
        for handler in logger.handlers:  # those that print to the terminal; not files, nor another's capture (pytest's)
            if getattr(handler, "stream", None) in terminal:
                handler.setStream(LogFile())


class WithoutTraceback(logging.Filter):
    """Prefect logs a failed task's or flow's traceback; for a user's mistake (bad data, a bad value) the CLI's one
    line says everything, and a traceback would read as a crash. Other exceptions keep theirs."""

    def __init__(self, kinds: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.kinds = kinds

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.kinds):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_user_errors(kinds: tuple[type[BaseException], ...]) -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine", "prefect.task_engine"):
        logging.getLogger(name).addFilter(WithoutTraceback(kinds))


def attach_ray() -> None:
    """After `ray.init` in this process: route what Ray forwards from its processes through `forward`; without the CLI
    (the library, tests), Ray's own printing, less the `REPEATED` lines."""
    from ray._private.worker import global_worker_stdstream_dispatcher, print_to_stdstream  # noqa: PLC0415

    global_worker_stdstream_dispatcher.remove_handler("ray_print_logs")
    if SETTINGS.verbose and SETTINGS.log_file is None:
        global_worker_stdstream_dispatcher.add_handler(
            "ray_print_logs", lambda data: print_to_stdstream({**data, "lines": unrepeated(data.get("lines") or [])}, ignore_prefix=False))
        return
    global_worker_stdstream_dispatcher.add_handler("ray_print_logs", lambda data: forward(data, print_to_stdstream))
    into_log_file("ray")


def attach_mlflow() -> None:
    """After `import mlflow`: its log lines and notices ("Creating initial MLflow database tables", "Successfully
    registered model") go to the run's log file without --verbose; the register stage says what it did itself."""
    if SETTINGS.verbose or SETTINGS.log_file is None:
        return
    from mlflow.utils import logging_utils  # noqa: PLC0415

    logging_utils.MLFLOW_LOGGING_STREAM.write = LogFile().write  # MLflow's own stream: its handlers and `eprint` write to it


def forward(data: dict, ray_print) -> None:  # noqa: ANN001 - Ray's own printer, used with --verbose
    """One batch of lines from one Ray process: all to the log file; ours to the user; the rest only with --verbose."""
    lines = unrepeated(data.get("lines") or [])
    if SETTINGS.log_file is not None:
        origin = f"({data.get('actor_name') or data.get('task_name') or 'ray'} pid={data.get('pid')})"
        with _lock, SETTINGS.log_file.open("a") as log:
            log.writelines(f"{origin} {line}\n" for line in lines)
    ours = [line for line in lines if line.startswith(OURS)]
    if SETTINGS.verbose:
        ray_print({**data, "lines": [line for line in lines if not line.startswith(OURS)]}, ignore_prefix=False)
    for line in ours:
        user_line(line)


def unrepeated(lines: list[str]) -> list[str]:
    """The lines less the `REPEATED` ones seen before; every hundredth of those is kept, saying how many there were."""
    kept = []
    for line in lines:
        known = next((r for r in REPEATED if r in line), None)
        if known is None:
            kept.append(line)
            continue
        _repeats[known] += 1
        count = _repeats[known]
        if count == 1 or count % 100 == 0:
            kept.append(line if count == 1 else f"{line} ({count} times so far)")
    return kept


def user_line(line: str) -> None:
    """A line for the user: onto the Prefect log of the running task (one line per epoch), and the bar."""
    epoch = EPOCH.match(line)
    if epoch and _bar:
        done, total, step, speed = (int(g) for g in epoch.groups())
        _bar[0].update(done, total, f"step {step}, {speed} img/s")
    if _task_logger:
        _task_logger[0].info(line)
    else:
        print(line, flush=True)


class Bar:
    """A rich progress bar on stderr, drawn only on a terminal. While it is live, Prefect's console lines and
    prints appear above it instead of through it."""

    def __init__(self, description: str, total: int | None):
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(), console=self.console, redirect_stdout=True, redirect_stderr=True,
        )
        self.task = self.progress.add_task(description, total=total, note="")

    def update(self, completed: int, total: int | None = None, note: str = "") -> None:
        if self.live:
            self.progress.update(self.task, completed=completed, total=total, note=note)

    @contextmanager
    def shown(self) -> Iterator["Bar"]:
        if not self.live:
            yield self
            return
        handlers = [h for h in _prefect_console_handlers() if getattr(h, "console", None) is not None]
        files = [h.console.file for h in handlers]
        with self.progress:  # sys.stdout and sys.stderr now write above the bar
            for h in handlers:
                h.console.file = sys.stderr
            try:
                yield self
            finally:
                for h, f in zip(handlers, files):
                    h.console.file = f


def _prefect_console_handlers() -> list[logging.Handler]:
    from prefect.logging.handlers import PrefectConsoleHandler  # noqa: PLC0415

    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("prefect"))]
    return [h for lg in loggers for h in getattr(lg, "handlers", []) if isinstance(h, PrefectConsoleHandler)]


def task_logger() -> logging.Logger | logging.LoggerAdapter | None:
    """The Prefect logger of the running task, or None outside a Prefect run."""
    from prefect import get_run_logger  # noqa: PLC0415
    from prefect.exceptions import MissingContextError  # noqa: PLC0415

    try:
        return get_run_logger()
    except MissingContextError:
        return None


def record_failure(text: str) -> Path | None:
    """Append a failure's whole text to the run's log file (the terminal gets its first line); the file's path."""
    if SETTINGS.log_file is None:
        return None
    try:
        with _lock, SETTINGS.log_file.open("a") as log:
            log.write(f"\n[error] {text}\n")
    except OSError:  # the disk that failed the run may be the log's: the terminal line must still come out
        return None
    return SETTINGS.log_file


@contextmanager
def training(epochs: int | None, logger: logging.Logger | logging.LoggerAdapter | None) -> Iterator[None]:
    """Around `TrainerTorch.fit()` in the CLI process: the epoch bar, and the task's logger for the epoch lines."""
    bar = Bar("train", epochs)
    with _lock:
        _bar[:], _task_logger[:] = [bar], [logger] if logger is not None else []
    try:
        with bar.shown():
            yield
    finally:
        with _lock:
            _bar.clear(), _task_logger.clear()


@contextmanager
def steps(description: str, total: int) -> Iterator["Bar"]:
    """A bar over the named steps of a stage (e.g. evaluation): advance it with `bar.update(done, note=...)`."""
    bar = Bar(description, total)
    started = time.time()
    with bar.shown():
        yield bar
    bar.update(total, note=f"{time.time() - started:.0f} s")
