"""`gan-pipeline compare`: one run per preset on the same data and budget, one table (`pipelines/compare.py`)."""

from pathlib import Path
from typing import Annotated

import typer
import yaml

from pipelines.cli.app import ConfigOption, DryRunOption, SetOption, VerboseOption, _enter, _preflight, app
from pipelines.config import load_config, preset_path
from pipelines.errors import UsageError


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
    _enter(next(iter(configs.values())).runtime.workdir, verbose, exclusive=True)
    for cfg in configs.values():
        _preflight(cfg)
    from pipelines.compare import compare_presets  # noqa: PLC0415

    result = compare_presets({name: cfg.model_dump(mode="json") for name, cfg in configs.items()})
    typer.echo(Path(result["table"]).read_text())
    typer.echo(f"table, samples and time-to-quality plot in {Path(result['table']).parent}")
