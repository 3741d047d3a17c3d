"""Fixtures shared by the tests."""

from collections.abc import Callable
from pathlib import Path

import os
import sys

import pytest
import torch


@pytest.fixture(autouse=True)
def own_environment():
    """A test that runs the CLI in-process gets the CLI's environment defaults (configure_environment: the Prefect
    results folder of its working folder, ...): put the environment back, or every later test's subprocesses would
    inherit them and share that test's cached results."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """`cli(*args)` runs `gan-pipeline ARGS` in this process: (exit code, stdout, stderr)."""
    from pipelines.cli.main import main  # noqa: PLC0415

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["gan-pipeline", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        out = capsys.readouterr()
        return exited.value.code, out.out, out.err

    return run


@pytest.fixture
def one_thread():
    """Tiny tensors run faster on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def client(tmp_path: Path) -> "mlflow.MlflowClient":  # noqa: F821
    """A real MLflow store, SQLite in the workspace tmp_path/gan-work, holding an empty registered model `m`."""
    import mlflow  # noqa: PLC0415 - only the tests that use the registry pay for the import

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'gan-work' / 'mlflow.db'}")
    (tmp_path / "gan-work").mkdir()
    client = mlflow.MlflowClient()
    client.create_registered_model("m")
    yield client
    mlflow.set_tracking_uri(None)
