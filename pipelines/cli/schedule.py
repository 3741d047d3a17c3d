"""`gan-pipeline schedule`: the flow served on a cron schedule (`pipelines/schedule.py`)."""

from typing import Annotated

import typer

from pipelines.cli.app import ConfigOption, DryRunOption, PresetOption, SetOption, _load, _preflight, _print_config_and_exit, app
from pipelines.workspace import Workspace, configure_environment, writable_workspace


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
