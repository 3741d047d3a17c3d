"""The `gan-pipeline` Typer app and what every command shares: the config options, the checks before any service starts,
the working folder's lock and console, and the entry point that turns a user's mistake into one line."""

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
import yaml

from pipelines import console, errors
from pipelines.cluster.ray import check_driver
from pipelines.config import ConfigError, PipelineConfig, keys, keys_markdown, load_config, preset_path
from pipelines.errors import UsageError
from pipelines.faults import drills
from pipelines.workspace import Workspace, acquire_workspace_lock, check_stores, configure_environment, release_workspace_locks, writable_workspace

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="`gan-pipeline`: the whole flow, or one stage at a time with the same task code.")

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file overriding the defaults (and the preset)")]
PresetOption = Annotated[Optional[str], typer.Option("--preset", "-p", help="a recipe from conf/presets/ (e.g. wgan-gp), applied before --config")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override one value: section.key=value (repeatable)")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="print the resolved config and exit")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="show everything Ray's processes print (always kept in gan-work/logs/)")]


def _prepare(
    preset: str | None, config: Path | None, overrides: list[str] | None, dry_run: bool, verbose: bool = False, exclusive: bool = True,
) -> PipelineConfig:
    """The resolved config (printed, and exit, with --dry-run). An `exclusive` command, one that runs stages, holds the
    working folder's lock while it runs; the others (sample, models, and promote / rollback, which move one alias) do not
    wait for a run."""
    cfg = _load(preset, config, overrides)
    if dry_run:
        _print_config_and_exit(cfg)
    _enter(cfg.runtime.workdir, verbose, exclusive)
    return cfg


def _enter(workdir: str, verbose: bool, exclusive: bool) -> None:
    """Before a command's work: the drills said (a command that runs stages), the working folder checked writable and,
    for an `exclusive` command, locked (released by `main` when it ends); the console; the services' environment."""
    if exclusive:
        announce_drills()
    workspace = writable_workspace(workdir)
    if exclusive:
        acquire_workspace_lock(workspace)
    _console(workspace, verbose)
    configure_environment(workspace)  # before Prefect is imported


def start_services(cfg: PipelineConfig) -> Callable[[], object]:
    """After the checks: Prefect's temporary server (unless PREFECT_API_URL names one) starts on a thread while Ray starts
    here (its processes die with the thread that started them, so not on a passing one), side by side instead of one after
    the other. Returns the wait for Prefect's server, which the flow needs first."""
    from prefect.settings import PREFECT_API_URL  # noqa: PLC0415

    from pipelines.cluster.ray import ensure_ray, trains_as_job  # noqa: PLC0415

    prefect_up = (lambda: None) if PREFECT_API_URL.value() else _aside(_start_prefect_server)
    if not trains_as_job(cfg):
        ensure_ray(cfg.ray.dashboard)
    return prefect_up


def _start_prefect_server() -> None:
    from prefect.server.api.server import SubprocessASGIServer  # noqa: PLC0415

    SubprocessASGIServer().start()  # the one temporary server of this process, which Prefect's client then finds running


def _aside(work: Callable[[], object]) -> Callable[[], object]:
    """Run `work` on a thread; the returned call waits for it and gives its result (or raises its error)."""
    return ThreadPoolExecutor(1, thread_name_prefix=work.__name__.strip("_")).submit(work).result


def _load(preset: str | None, config: Path | None, overrides: list[str] | None) -> PipelineConfig:
    return load_config(([preset_path(preset)] if preset else []) + ([config] if config else []), overrides or [])


def announce_drills() -> None:
    """A command that runs stages reads the test hooks first (a bad one is a config error, before any work) and says
    which are active, once, on stderr (stdout is what a stage command prints for scripts)."""
    for line in drills():
        typer.echo(line, err=True)


def _print_config_and_exit(cfg: PipelineConfig) -> None:
    """--dry-run: the resolved config, and exit."""
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())
    raise typer.Exit(0)


@app.command("keys")
def keys_command(
    section: Annotated[Optional[str], typer.Argument(help="one section (model, train, reg, optim, data, eval, ray, registry, runtime)")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="the tables of docs/keys.md")] = False,
) -> None:
    """Every config key with its default and what it does (the typed config's help strings)."""
    if markdown:
        typer.echo(keys_markdown())
        return
    rows = keys(section)
    if not rows:
        raise UsageError(f"keys {section}: no such section; expected one of {', '.join(PipelineConfig.model_fields)}")
    width = max(len(k) for k, _, _ in rows)
    for key, default, text in rows:
        typer.echo(f"{key:<{width}}  {default}\n{'':<{width}}  {text}")


def _console(workspace: Workspace, verbose: bool) -> None:
    """Ray's output goes to a log file of this command (and to the terminal with --verbose)."""
    context = click.get_current_context(silent=True)
    command = context.info_name if context is not None else "gan-pipeline"
    console.configure(verbose, workspace.root / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{os.getpid()}.log")
    from pipelines.errors import user_errors  # noqa: PLC0415

    console.quiet_user_errors(user_errors())


def _preflight(cfg: PipelineConfig) -> None:
    """Check the settings against this machine, and the source and the config against it, before starting any service."""
    check_driver(cfg)
    check_stores(cfg)
    from pipelines.stages.ingest import preflight  # noqa: PLC0415 - imports Prefect: after the checks that need nothing

    image_shape = preflight(cfg)
    if cfg.train.init_from:  # a warm start's parent found and fitting the networks and the data's images
        from pipelines.registry.warm_start import resolve  # noqa: PLC0415

        resolve(cfg, image_shape, say=False)


def _existing(path: Path, flag: str) -> Path:
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such file or folder")
    return path.resolve()


def _dataset(path: Path) -> Path:
    """--dataset DIR, read before any service starts: a folder that is no complete dataset (no manifest: not written by
    `ingest`, or not yet whole) is a DataError naming it."""
    from gan.data.manifest import read_manifest  # noqa: PLC0415

    path = _existing(path, "--dataset")
    read_manifest(path)
    return path


def _checkpoint(path: Path) -> Path:
    """--checkpoint DIR, read once before any service starts: a folder without a checkpoint this project wrote (a pickle
    that would run code, a truncated file) is a CheckpointError naming its state.pt."""
    from gan import checkpoint  # noqa: PLC0415 - torch

    path = _existing(path, "--checkpoint")
    checkpoint.load(path)
    return path


def main() -> None:
    """Entry point: run the command, then let the next run in this working folder go (`workspace.acquire_workspace_lock`)."""
    try:
        _main()
    finally:
        release_workspace_locks()


def _main() -> None:
    """User mistakes print one line and exit non-zero, without a traceback."""
    try:
        code = app(standalone_mode=False)  # returns the exit code of typer.Exit
    except click.ClickException as err:  # bad command line: click's own message
        err.show()
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # a user's error, or a stage that failed after its retries: say which and why, once
        message, code = _failure(err)
        typer.echo(message, err=True)
        sys.exit(code)
    sys.exit(code if isinstance(code, int) else 0)


def _failure(err: Exception) -> tuple[str, int]:
    """An error as one line and an exit code: a user's error (`errors.USER_ERRORS`: bad input, a model unfit to register,
    a cluster without room, a place that cannot be written) with its own code; anything else failed the pipeline (1)."""
    code = errors.exit_code(err)
    if code is not None:
        return _user_message(err), code
    lines = str(err).strip().splitlines() or [""]
    log = console.record_failure(f"{type(err).__name__}: {err}")
    more = f" ({f'{len(lines) - 1} more lines and ' if len(lines) > 1 else ''}every process's output in {log})" if log else ""
    return f"error: the pipeline failed: {type(err).__name__}: {lines[0]}{more}", 1


def _user_message(err: Exception) -> str:
    """A user's error in its own words: a config error says so itself, a storage error names the file and the remedy."""
    if isinstance(err, ConfigError):
        return str(err)
    return f"error: {errors.storage_message(err) if errors.is_storage_error(err) else err}"
