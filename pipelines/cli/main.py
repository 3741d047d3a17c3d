"""The `gan-pipeline` entry point: the app with every group of commands registered, in the order `--help` lists them."""

from pipelines.cli import stages, schedule, registry, compare  # noqa: F401, I001 - each registers its commands on the app, in this order
from pipelines.cli.app import app, main

__all__ = ["app", "main"]
