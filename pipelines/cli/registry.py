"""The registry's commands: samples of a registered generator, the generator served over HTTP, `champion` moved by hand,
and the versions of a model with one version's lineage."""

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from pipelines.cli.app import ConfigOption, SetOption, _prepare, app

if TYPE_CHECKING:
    from pipelines.registry.lineage import Link, VersionRow


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
    from pipelines.registry.serving import sample_grid  # noqa: PLC0415

    typer.echo(sample_grid(cfg, model, n, out, seed, label, per_class))


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="MLflow model URI")] = "models:/mnist-gan@champion",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to answer on")] = 5001,
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(min=1, help="server processes, each holding the generator")] = 1,
    config: ConfigOption = None, set: SetOption = None,  # noqa: A002
) -> None:
    """Serve a registered generator over HTTP with MLflow's scoring server, in this environment, until interrupted."""
    cfg = _prepare(None, config, set, False, exclusive=False)
    from pipelines.registry.serving import scoring_server  # noqa: PLC0415

    command, env = scoring_server(cfg, model, host, port, workers)
    typer.echo(f"serving {model} on http://{host}:{port} (POST /invocations; GET /ping)", err=True)
    sys.stderr.flush()
    os.execve(command[0], command, env)  # the server takes this process: Ctrl-C and SIGTERM reach it directly


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Argument(help="version number (or alias) to make champion")],
    why: Annotated[str, typer.Option(help="the reason, kept in the model's champion history")] = "promoted by hand",
    config: ConfigOption = None, set: SetOption = None,  # noqa: A002
) -> None:
    """Make a version champion by hand, whatever the gate would say; who and why are recorded."""
    cfg = _prepare(None, config, set, False, exclusive=False)
    from pipelines.registry.champion import promote as promote_version  # noqa: PLC0415

    typer.echo(promote_version(cfg, name, version, why))


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="registered model name")],
    why: Annotated[str, typer.Option(help="the reason, kept in the model's champion history")] = "rolled back by hand",
    config: ConfigOption = None, set: SetOption = None,  # noqa: A002
) -> None:
    """Move champion back to the version that held it before (per the recorded champion history)."""
    cfg = _prepare(None, config, set, False, exclusive=False)
    from pipelines.registry.champion import rollback as rollback_champion  # noqa: PLC0415

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
    from pipelines.registry import lineage  # noqa: PLC0415

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
