"""`gan-pipeline`: the whole flow, or one stage at a time with the same task code."""

import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import click
import typer
import yaml
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from pipelines import console
from pipelines.config import ConfigError, PipelineConfig, RegistrationRefused, UsageError, load_config, preset_path
from pipelines.runtime import (
    Workspace,
    acquire_workspace_lock,
    check_driver,
    check_stores,
    configure_environment,
    release_workspace_locks,
    writable_workspace,
)

if TYPE_CHECKING:
    from pipelines.lineage import Link, VersionRow

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__)

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
    workspace = writable_workspace(cfg.runtime.workdir)
    if exclusive:
        acquire_workspace_lock(workspace)  # released by `main` when the command ends
    _console(workspace, verbose)
    configure_environment(workspace)  # before Prefect is imported
    return cfg


def _load(preset: str | None, config: Path | None, overrides: list[str] | None) -> PipelineConfig:
    return load_config(([preset_path(preset)] if preset else []) + ([config] if config else []), overrides or [])


def _print_config_and_exit(cfg: PipelineConfig) -> None:
    """--dry-run: the resolved config, and exit."""
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())
    raise typer.Exit(0)


def _console(workspace: Workspace, verbose: bool) -> None:
    """Ray's output goes to a log file of this command (and to the terminal with --verbose)."""
    context = click.get_current_context(silent=True)
    command = context.info_name if context is not None else "gan-pipeline"
    console.configure(verbose, workspace.root / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{os.getpid()}.log")
    from pipelines.stages import USER_ERRORS  # noqa: PLC0415

    console.quiet_user_errors(USER_ERRORS)


def _preflight(cfg: PipelineConfig) -> None:
    """Check the settings against this machine, and the source and the config against it, before starting any service."""
    check_driver(cfg)
    check_stores(cfg)
    from pipelines.ingest import preflight  # noqa: PLC0415 - imports Prefect: after the checks that need nothing

    image_shape = preflight(cfg)
    if cfg.train.init_from:  # a warm start's parent found and fitting the networks and the data's images
        from pipelines.warm_start import resolve  # noqa: PLC0415

        resolve(cfg, image_shape, say=False)


@app.command()
def run(
    preset: PresetOption = None, config: ConfigOption = None, set: SetOption = None, dry_run: DryRunOption = False,  # noqa: A002
    verbose: VerboseOption = False,
) -> None:
    """Run the whole pipeline: ingest -> train (Ray Train) -> evaluate -> register (MLflow)."""
    cfg = _prepare(preset, config, set, dry_run, verbose)  # waits while another run holds the working folder
    cli_started = time.time()
    _preflight(cfg)
    from pipelines.flow import gan_pipeline, write_summary  # noqa: PLC0415

    imported = time.time()
    summary = gan_pipeline(cfg.model_dump(mode="json"))  # a failed run has written its summary: the stages so far and the failure
    summary["overhead"] = _overhead(summary, cli_started, imported)
    _print_summary(summary, write_summary(cfg, summary))
    if "refused" in summary["registered"]:
        raise RegistrationRefused(summary["registered"]["refused"])


@app.command()
def schedule(
    cron: Annotated[str, typer.Option(help='when to run, as cron fields: "0 2 * * *" is 02:00 every day')],
    timezone: Annotated[str, typer.Option(help="the time zone of --cron (IANA name, e.g. Europe/Paris)")] = "UTC",
    name: Annotated[str, typer.Option(help="the deployment's name: its runs show as gan-pipeline/NAME")] = "scheduled",
    preset: PresetOption = None, config: ConfigOption = None, set: SetOption = None, dry_run: DryRunOption = False,  # noqa: A002
) -> None:
    """Serve the pipeline on a cron schedule until Ctrl-C or SIGTERM, one run at a time: a run that comes due while
    another runs waits for it. Needs a Prefect server: `prefect server start`, and PREFECT_API_URL naming it."""
    cfg = _load(preset, config, set)
    workspace = Workspace.of(cfg.runtime.workdir)
    cfg.runtime.workdir = str(workspace.root)  # runs write here, whichever folder a run is started from
    configure_environment(workspace)  # before Prefect is imported; the runs' subprocesses inherit it
    from pipelines import schedule as scheduling  # noqa: PLC0415

    scheduling.check_name(name)
    next_run = scheduling.next_run(cron, timezone)
    if dry_run:
        _print_config_and_exit(cfg)
    writable_workspace(cfg.runtime.workdir)
    api = scheduling.api_url()
    _preflight(cfg)
    ui = scheduling.ui_url()
    typer.echo("\n".join([
        f"serving gan-pipeline/{name}: cron {cron!r} ({timezone}), next run {next_run:%Y-%m-%d %H:%M %Z}; one run at a time "
        "(a run that comes due while another runs waits for it)",
        f"runs write to {workspace.root}; Prefect API {api}" + (f"; UI {ui}/deployments" if ui else ""),
        f"run it now: prefect deployment run gan-pipeline/{name}; stop serving: Ctrl-C (pauses the schedule)",
    ]))
    scheduling.serve(cfg, name, cron, timezone)


def _overhead(summary: dict, cli_started: float, imported: float) -> dict:
    """The fixed costs every user waits for, as far as this run paid them (cached stages pay none)."""
    trained = summary["train"] if summary["stages"]["train"]["status"] == "ran" else {}
    return {
        "imports_seconds": round(imported - cli_started, 2),
        "prefect_flow_start_seconds": round(summary["flow_started_unix"] - imported, 2),
        "ray_start_seconds": trained.get("ray_start_seconds"),
        "to_first_step_seconds": trained.get("to_first_step_seconds"),
        "model_logging_seconds": summary["registered"].get("model_logging_seconds"),
    }


def _parent_label(parent: dict) -> str:
    from pipelines.warm_start import Parent  # noqa: PLC0415

    return f"{Parent.of_dict(parent).label()} (step {parent['step']}, named by {parent['source']})"


def _print_summary(summary: dict, path: Path) -> None:
    report = json.loads(Path(summary["report"]).read_text())
    model, floor = report["model"], report["real_vs_real"]
    lines = ["", "stage       status   seconds"]
    lines += [f"{name:<11} {s['status']:<8} {s['seconds']:>7.1f}" for name, s in summary["stages"].items()]
    lines += [
        "",
        f"FID {model['fid']:.2f} ± {model['fid_bootstrap_std']:.2f} ({model['fid'] / floor['fid']:.1f}x the real-vs-real floor "
        f"{floor['fid']:.2f} ± {floor['fid_bootstrap_std']:.2f}; over {len(report['fid_draws']['values'])} latent draws "
        f"{report['fid_draws']['mean']:.2f} ± {report['fid_draws']['std']:.2f}); KID {model['kid']:.4f} ± {model['kid_std']:.4f} "
        f"(floor {floor['kid']:.4f}); precision {model['precision']:.2f}, recall {model['recall']:.2f}; "
        f"memorised {report['memorisation']['pixels']['memorised_share']:.1%} (pixels); "
        f"IS {model['inception_score']:.2f} "
        f"(floor {floor['inception_score']:.2f}); classes {model['classes_covered']} (floor {floor['classes_covered']}); "
        f"class KL {model['class_kl']:.3f}; classifier accuracy {report['classifier_test_accuracy']:.3f}"
        + (f"; label accuracy, worst class {report['conditional']['min_accuracy']:.3f}" if "conditional" in report else "")
        + (f"; code-class agreement {report['infogan']['code_class_agreement']:.3f}" if "infogan" in report else ""),
        f"NOT registered: {summary['registered']['refused']}" if "refused" in summary["registered"] else
        f"registered {summary['registered']['model_name']} v{summary['registered']['version']}"
        f" (champion: {'yes' if summary['registered']['champion'] else 'no'}, {summary['registered']['reason']})",
        *([f"warm-started from {_parent_label(summary['warm_start'])}"] if summary.get("warm_start") else []),
        f"samples: {Path(summary['report']).parent / 'samples.png'}",
        f"summary: {path}",
    ]
    typer.echo("\n".join(lines))


@app.command()
def ingest(preset: PresetOption = None, config: ConfigOption = None, set: SetOption = None, dry_run: DryRunOption = False) -> None:  # noqa: A002
    """Stage 1: source -> Parquet dataset. Prints the dataset folder."""
    cfg = _prepare(preset, config, set, dry_run)
    _preflight(cfg)
    from pipelines.ingest import ingest_task  # noqa: PLC0415

    typer.echo(ingest_task(cfg))


@app.command()
def train(
    dataset: Annotated[Path, typer.Option(help="dataset folder printed by `ingest`")],
    preset: PresetOption = None, config: ConfigOption = None, set: SetOption = None, dry_run: DryRunOption = False,  # noqa: A002
    verbose: VerboseOption = False,
) -> None:
    """Stage 2: dataset -> checkpoint on Ray Train. Prints the checkpoint folder."""
    cfg = _prepare(preset, config, set, dry_run, verbose)
    dataset = _existing(dataset, "--dataset")
    from pipelines.train import train_task, warm_start_task  # noqa: PLC0415

    parent = warm_start_task(cfg, str(dataset)) if cfg.train.init_from else None
    typer.echo(train_task(cfg, str(dataset), parent)["checkpoint"])


@app.command()
def evaluate(
    dataset: Annotated[Optional[Path], typer.Option(help="dataset folder printed by `ingest` (optional with --model)")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="checkpoint folder printed by `train`")] = None,
    model: Annotated[Optional[str], typer.Option(help="a registered version instead: models:/NAME@ALIAS or models:/NAME/VERSION")] = None,
    preset: PresetOption = None, config: ConfigOption = None, set: SetOption = None, dry_run: DryRunOption = False,  # noqa: A002
) -> None:
    """Stage 3: checkpoint or registered version -> evaluation report. Prints its FID line and the report's path."""
    if (checkpoint is None) == (model is None):
        raise UsageError("evaluate: give exactly one of --checkpoint DIR and --model models:/NAME@ALIAS")
    if checkpoint is not None and dataset is None:
        raise UsageError("evaluate --checkpoint: --dataset DIR is required too")
    cfg = _prepare(preset, config, set, dry_run)
    from pipelines.evaluate import evaluate_task, fid_line  # noqa: PLC0415

    dataset = dataset and _existing(dataset, "--dataset")
    if model is not None:
        from pipelines.register import evaluation_inputs  # noqa: PLC0415

        dataset, checkpoint = evaluation_inputs(cfg, model, dataset)
    else:
        checkpoint = _existing(checkpoint, "--checkpoint")
    report = evaluate_task(cfg, str(dataset), str(checkpoint))
    typer.echo(f"{model or checkpoint}: {fid_line(json.loads(Path(report).read_text()))}")
    typer.echo(report)


@app.command()
def register(
    dataset: Annotated[Path, typer.Option(help="dataset folder printed by `ingest`")],
    checkpoint: Annotated[Path, typer.Option(help="checkpoint folder printed by `train`")],
    report: Annotated[Path, typer.Option(help="report.json printed by `evaluate`")],
    preset: PresetOption = None, config: ConfigOption = None, set: SetOption = None, dry_run: DryRunOption = False,  # noqa: A002
) -> None:
    """Stage 4: log to MLflow, register a model version, move the aliases. Prints the version."""
    cfg = _prepare(preset, config, set, dry_run)
    from pipelines.register import register_task  # noqa: PLC0415

    paths = [str(_existing(p, flag)) for p, flag in ((dataset, "--dataset"), (checkpoint, "--checkpoint"), (report, "--report"))]
    registered = register_task(cfg, *paths, None)
    typer.echo(json.dumps(registered))
    if "refused" in registered:
        raise RegistrationRefused(registered["refused"])


@app.command()
def sample(
    model: Annotated[str, typer.Option(help="MLflow model URI")] = "models:/mnist-gan@champion",
    n: Annotated[int, typer.Option("-n", min=1, max=4096, help="number of images")] = 64,
    out: Annotated[Path, typer.Option(help="PNG file to write")] = Path("grid.png"),
    seed: Annotated[int, typer.Option(min=0, help="seed of the latents")] = 0,
    label: Annotated[Optional[int], typer.Option(help="conditional models: draw every image of this class")] = None,
    per_class: Annotated[bool, typer.Option("--per-class", help="one row per class; for InfoGAN, rows vary the categorical "
                                            "code and columns the first continuous code")] = False,
    config: ConfigOption = None, set: SetOption = None,  # noqa: A002
) -> None:
    """Load a registered generator in this process and write a grid of its samples."""
    cfg = _prepare(None, config, set, False, exclusive=False)
    from pipelines.register import sample_grid  # noqa: PLC0415

    typer.echo(sample_grid(cfg, model, n, out, seed, label, per_class))


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Argument(help="version number (or alias) to make champion")],
    why: Annotated[str, typer.Option(help="the reason, kept in the model's champion history")] = "promoted by hand",
    config: ConfigOption = None, set: SetOption = None,  # noqa: A002
) -> None:
    """Make a version champion by hand, whatever the gate would say; who and why are recorded."""
    cfg = _prepare(None, config, set, False, exclusive=False)
    from pipelines.register import promote as promote_version  # noqa: PLC0415

    typer.echo(promote_version(cfg, name, version, why))


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="registered model name")],
    why: Annotated[str, typer.Option(help="the reason, kept in the model's champion history")] = "rolled back by hand",
    config: ConfigOption = None, set: SetOption = None,  # noqa: A002
) -> None:
    """Move champion back to the version that held it before (per the recorded champion history)."""
    cfg = _prepare(None, config, set, False, exclusive=False)
    from pipelines.register import rollback as rollback_champion  # noqa: PLC0415

    typer.echo(rollback_champion(cfg, name, why))


@app.command()
def models(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[Optional[str], typer.Option(help="a version number or alias: print its lineage, each link checked")] = None,
    config: ConfigOption = None, set: SetOption = None,  # noqa: A002
) -> None:
    """List a model's versions (aliases, scores, when made); with --version, the chain from that version back to its
    MLflow run, Prefect flow run, Ray Train run and checkpoint, dataset, resolved config and code, each link checked."""
    cfg = _prepare(None, config, set, False, exclusive=False)
    from pipelines import lineage  # noqa: PLC0415

    if version is None:
        _print_table(_versions_table(name, lineage.versions_table(cfg, name), lineage.yardstick_of(cfg, name)))
    else:
        _print_table(_chain_table(lineage.chain(cfg, name, version)))


def _versions_table(name: str, rows: list["VersionRow"], yardstick: dict | None) -> Table:
    """One row per version: its aliases, the data it was trained on, what it was warm-started from, its FID on its own
    data (beside that data's floor) and on the model's yardstick (fixed by the first version, so the column compares)."""
    title = f"{name}: {len(rows)} version{'s' * (len(rows) != 1)}"
    on = "on yardstick" + (f" (v{yardstick['version']}'s data {yardstick['dataset'][:8]})" if yardstick else "")
    table = Table("version", "aliases", "data", "from", "FID ± std", "floor", on, "memorised", "created", Column("run", overflow="fold"),
                  title=title)

    def number(value: float | None, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    def fid(value: float | None, std: float | None) -> str:
        return "—" if value is None else f"{value:.2f} ± {number(std, '.2f')}"

    for r in rows:
        parent = "—" if r.parent is None else r.parent.removeprefix(f"{name} ")  # "v1" for this model's, "other v3" for another's
        table.add_row(f"v{r.version}", ", ".join(r.aliases), (r.data or "—")[:12], parent, fid(r.fid, r.fid_std), number(r.floor_fid, ".2f"),
                      fid(r.yardstick_fid, r.yardstick_fid_std), number(r.memorised_share, ".1%"), f"{r.created:%Y-%m-%d %H:%M}", r.run_id)
    return table


def _chain_table(links: list["Link"]) -> Table:
    """One row per link: what, the recorded value, and ✓ or ✗ with what was found (or why it is missing)."""
    # Long paths, hashes and addresses fold onto the next line instead of ending in an ellipsis.
    table = Table("link", Column("recorded", overflow="fold"), Column("check", overflow="fold"),
                  title=f"lineage of {links[0].value}")  # the first link: the version itself
    for link in links:
        check = Text.assemble(("✓ ", "green"), link.detail) if link.exists else Text(f"✗ {link.detail}", style="red")
        table.add_row(link.what, link.value, check)
    return table


def _print_table(table: Table) -> None:
    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:  # a pipe or a file: rows stay whole instead of wrapping at 80 columns
        out = Console(width=250)
    out.print(table)


@app.command()
def compare(
    presets: Annotated[str, typer.Option(help="comma-separated presets from conf/presets/, e.g. dcgan,wgan-gp,recommended")],
    config: ConfigOption = None, set: SetOption = None, dry_run: DryRunOption = False, verbose: VerboseOption = False,  # noqa: A002
) -> None:
    """Run the pipeline once per preset on the same data and budget (--config / --set apply to every preset);
    each registers as <registry.model_name>-<preset>. Writes a table, one sample row per preset and a time-to-quality plot."""
    names = [p.strip() for p in presets.split(",") if p.strip()]
    if not names or len(frozenset(names)) != len(names):  # `set` is the --set option here
        raise UsageError(f"--presets {presets!r}: expected distinct, comma-separated preset names")
    configs = {name: load_config([preset_path(name)] + ([config] if config else []), set or []) for name in names}
    for name, cfg in configs.items():
        cfg.registry.model_name = f"{cfg.registry.model_name}-{name}"
        cfg.registry.tags = {**cfg.registry.tags, "preset": name}
    if dry_run:
        typer.echo(yaml.safe_dump({name: cfg.model_dump(mode="json") for name, cfg in configs.items()}, sort_keys=False).rstrip())
        raise typer.Exit(0)
    workspace = writable_workspace(next(iter(configs.values())).runtime.workdir)
    acquire_workspace_lock(workspace)
    _console(workspace, verbose)
    configure_environment(workspace)
    for cfg in configs.values():
        _preflight(cfg)
    from pipelines.compare import compare_presets  # noqa: PLC0415

    result = compare_presets({name: cfg.model_dump(mode="json") for name, cfg in configs.items()})
    typer.echo(Path(result["table"]).read_text())
    typer.echo(f"table, samples and time-to-quality plot in {Path(result['table']).parent}")


def _existing(path: Path, flag: str) -> Path:
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such file or folder")
    return path.resolve()


def main() -> None:
    """Entry point: run the command, then let the next run in this working folder go (`runtime.acquire_workspace_lock`)."""
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
    except ConfigError as err:
        typer.echo(str(err), err=True)
        sys.exit(2)
    except UsageError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except RegistrationRefused as err:  # the model was trained and evaluated; the watchdog kept it out of the registry
        typer.echo(f"error: {err}", err=True)
        sys.exit(3)
    except (KeyboardInterrupt, click.exceptions.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # a stage failed after its retries: say which and why, once
        message, code = _failure(err)
        typer.echo(message, err=True)
        sys.exit(code)
    sys.exit(code if isinstance(code, int) else 0)


def _failure(err: Exception) -> tuple[str, int]:
    """A stage's error as one line and an exit code: bad data, a bad checkpoint or a place that cannot be written is the
    user's to fix (2); anything else failed the pipeline (1). Imported here: a mistyped key should not wait for torch."""
    from gan.checkpoint import CheckpointError  # noqa: PLC0415
    from gan.data import DataError  # noqa: PLC0415
    from pipelines.stages import is_storage_error  # noqa: PLC0415

    if isinstance(err, (DataError, CheckpointError)):
        return f"error: {err}", 2
    if is_storage_error(err):
        return f"error: {_storage_message(err)}", 2
    lines = str(err).strip().splitlines() or [""]
    log = console.record_failure(f"{type(err).__name__}: {err}")
    more = f" ({f'{len(lines) - 1} more lines and ' if len(lines) > 1 else ''}every process's output in {log})" if log else ""
    return f"error: the pipeline failed: {type(err).__name__}: {lines[0]}{more}", 1


def _storage_message(err: OSError) -> str:
    """A full disk, a read-only file system or a forbidden folder, naming the file and what to do."""
    where, reason = err.filename or "a file it does not name", os.strerror(err.errno).lower()
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        room = f" (df -h {Path(err.filename).parent} shows what is left)" if err.filename else ""
        return (f"{reason} writing {where}: free some space there{room} and run the same command again; finished stages "
                "are reused and training resumes from its latest saved checkpoint, if any")
    return (f"{where}: {reason}: give this user access to it or point the setting that names it (runtime.workdir, "
            "ray.storage_path, MLFLOW_TRACKING_URI) elsewhere, then run the same command again")


if __name__ == "__main__":
    main()
