"""The user's errors are one list (`pipelines.errors.USER_ERRORS`): the retry rule retries none of them, and the CLI ends
each with one line and the list's exit code; any other error is retried and ends the command as a failed pipeline (1).
The list in docs/pipeline.md is the same list."""

import errno
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines import errors
from pipelines.cli import app as cli_app

ROOT = Path(__file__).resolve().parents[1]


def ended(err: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """(exit code, stderr) of the CLI's entry point when a command raises `err`."""

    def command(**_: object) -> None:
        raise err

    monkeypatch.setattr(cli_app, "app", command)
    monkeypatch.setattr(sys, "argv", ["gan-pipeline"])
    with pytest.raises(SystemExit) as exited:
        cli_app.main()
    return exited.value.code, capsys.readouterr().err


def retried(err: Exception) -> bool:
    return errors.retry_unless_user_error(None, None, SimpleNamespace(data=err))


@pytest.mark.parametrize("kind", errors.user_errors(), ids=lambda kind: kind.__name__)
def test_every_user_error_is_never_retried_and_ends_the_command_with_its_own_code(
    kind: type[Exception], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    err = kind("config error: a.b = 1 (--set): too big" if issubclass(kind, errors.ConfigError) else "what to fix, in one line")
    code, said = ended(err, monkeypatch, capsys)
    assert not retried(err)
    assert code != 1 and "the pipeline failed" not in said and said.count("\n") == 1, (code, said)
    assert code == errors.USER_ERRORS[f"{kind.__module__}.{kind.__qualname__}"] == errors.exit_code(err)
    assert said == (f"{err}\n" if issubclass(kind, errors.ConfigError) else f"error: {err}\n")


def test_a_full_disk_is_the_users_and_anything_else_failed_the_pipeline(monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture) -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/data/gan-work/state.pt")
    assert not retried(full) and ended(full, monkeypatch, capsys)[0] == errors.INPUT
    bug = RuntimeError("rank 1 died")
    code, said = ended(bug, monkeypatch, capsys)
    assert retried(bug) and errors.exit_code(bug) is None
    assert code == 1 and said.startswith("error: the pipeline failed: RuntimeError: rank 1 died")


def test_the_documented_exit_codes_are_the_list() -> None:
    """docs/pipeline.md#exit-codes: one row per code, naming each class of the list with that code."""
    text = (ROOT / "docs" / "pipeline.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(code): set(re.findall(r"`(\w+)`", names)) for code, names in re.findall(r"^\| (\d+) \|[^|]*\|([^|]*)\|$", text, re.M)}
    listed = {name.rpartition(".")[2]: code for name, code in errors.USER_ERRORS.items()}
    assert {name: code for code, names in rows.items() for name in names} == listed
    assert set(rows) == {0, 1, 130, *listed.values()}
