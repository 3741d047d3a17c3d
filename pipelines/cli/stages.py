"""The pipeline's commands: `run` (the whole flow) and one stage at a time (`ingest`, `train`, `evaluate`, `register`),
which run the same Prefect tasks the flow runs (same caching, same retries)."""

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli.app import (
    ConfigOption, DryRunOption, PresetOption, SetOption, VerboseOption, _checkpoint, _dataset, _existing, _preflight, _prepare, app,
    start_services,
)
from pipelines.errors import RegistrationRefused, UsageError


@app.command()
def run(
    preset: PresetOption = None, config: ConfigOption = None, set: SetOption = None, dry_run: DryRunOption = False,  # noqa: A002
    verbose: VerboseOption = False,
) -> None:
    """Run the whole pipeline: ingest -> train (Ray Train) -> evaluate -> register (MLflow)."""
    cfg = _prepare(preset, config, set, dry_run, verbose)  # waits while another run holds the working folder
    cli_started = time.time()
    _preflight(cfg)
    checked = time.time()
    prefect_up = start_services(cfg)
    from pipelines.flow import gan_pipeline, write_summary  # noqa: PLC0415

    prefect_up()
    summary = gan_pipeline(cfg.model_dump(mode="json"))  # a failed run has written its summary: the stages so far and the failure
    summary["overhead"] = _overhead(summary, cli_started, checked)
    _print_summary(summary, write_summary(cfg, summary))
    if "refused" in summary["registered"]:
        raise RegistrationRefused(summary["registered"]["refused"])


def _overhead(summary: dict, cli_started: float, checked: float) -> dict:
    """The fixed costs every user waits for, as far as this run paid them (cached stages pay none)."""
    trained = summary["train"] if summary["stages"]["train"]["status"] == "ran" else {}
    return {
        "checks_seconds": round(checked - cli_started, 2),  # the config, the source and the stores, before any service
        "services_seconds": round(summary["flow_started_unix"] - checked, 2),  # Prefect's server and Ray side by side, imports
        "ray_start_seconds": trained.get("ray_start_seconds"),  # what the train stage still waited for Ray (0: it was up)
        "to_first_step_seconds": trained.get("to_first_step_seconds"),
        "model_logging_seconds": summary["registered"].get("model_logging_seconds"),
    }


def _parent_label(parent: dict) -> str:
    from pipelines.registry.warm_start import Parent  # noqa: PLC0415

    return f"{Parent.of_dict(parent).label()} (step {parent['step']}, named by {parent['source']})"


def _print_summary(summary: dict, path: Path) -> None:
    from gan.metrics.evaluation import summary_line  # noqa: PLC0415

    report = json.loads(Path(summary["report"]).read_text())
    lines = ["", "stage       status   seconds"]
    lines += [f"{name:<11} {s['status']:<8} {s['seconds']:>7.1f}" for name, s in summary["stages"].items()]
    lines += [
        "",
        f"{summary_line(report)}; classifier accuracy {report['classifier_test_accuracy']:.3f}",
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
    from pipelines.stages.ingest import ingest_task  # noqa: PLC0415

    typer.echo(ingest_task(cfg))


@app.command()
def train(
    dataset: Annotated[Path, typer.Option(help="dataset folder printed by `ingest`")],
    preset: PresetOption = None, config: ConfigOption = None, set: SetOption = None, dry_run: DryRunOption = False,  # noqa: A002
    verbose: VerboseOption = False,
) -> None:
    """Stage 2: dataset -> checkpoint on Ray Train. Prints the checkpoint folder."""
    cfg = _prepare(preset, config, set, dry_run, verbose)
    dataset = _dataset(dataset)
    prefect_up = start_services(cfg)
    from pipelines.stages.train import train_task, warm_start_task  # noqa: PLC0415

    prefect_up()

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
    from gan.metrics.evaluation import headline  # noqa: PLC0415
    from pipelines.stages.evaluate import evaluate_task  # noqa: PLC0415

    checkpoint = checkpoint and _checkpoint(checkpoint)
    dataset = dataset and _dataset(dataset)
    if model is not None:
        from pipelines.registry.lineage import evaluation_inputs  # noqa: PLC0415

        dataset, checkpoint = evaluation_inputs(cfg, model, dataset)
    report = evaluate_task(cfg, str(dataset), str(checkpoint))
    typer.echo(f"{model or checkpoint}: {headline(json.loads(Path(report).read_text()))}")
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
    from pipelines.stages.register import register_task  # noqa: PLC0415

    checkpoint = _checkpoint(checkpoint)  # the checks in the order a user would fix them: the model first
    paths = [str(_dataset(dataset)), str(checkpoint), str(_existing(report, "--report"))]
    registered = register_task(cfg, *paths, None)
    typer.echo(json.dumps(registered))
    if "refused" in registered:
        raise RegistrationRefused(registered["refused"])
