"""The test hooks' parsers (`pipelines/faults.py`): any value of GAN_PIPELINE_FAIL_AT or GAN_INJECT_NAN_AT_STEP either
parses or is a one-line ConfigError (exit 2 from the CLI, never retried), never a traceback; and a command that runs
stages says, once, which hooks are active, so that a drill is never taken for a normal run."""

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from gan.config import ConfigError
from pipelines.errors import retry_unless_user_error
from pipelines.faults import FAIL_HOOK, NAN_HOOK, ONCE, parse_failure_hook, parse_nan_step
from pipelines.stages import STAGES

SMOKE = str(Path(__file__).resolve().parents[1] / "conf" / "smoke.yaml")
BOUNDED = settings(max_examples=300, deadline=None, database=None)  # pure parsing: a second or two


def parsed_or_refused(parse: Callable[[str], object], value: str, hook: str) -> object:
    """`parse(value)`, or None after checking its ConfigError: one line naming the hook and quoting the value."""
    try:
        return parse(value)
    except ConfigError as err:
        message = str(err)
        assert message.startswith(f"config error: {hook}={value!r}: ") and "\n" not in message, message
        from types import SimpleNamespace  # noqa: PLC0415

        assert not retry_unless_user_error(None, None, SimpleNamespace(data=err))
        return None


# --- GAN_INJECT_NAN_AT_STEP ------------------------------------------------------------------------------------------

@BOUNDED
@given(st.one_of(st.text(max_size=20), st.integers(-5, 10**13).map(str), st.from_regex(r"\A[0-9²³¹٠-٩]{1,6}\Z")))
def test_any_nan_step_value_is_a_step_or_a_config_error(value: str) -> None:
    step = parsed_or_refused(parse_nan_step, value, NAN_HOOK)
    if step is not None:
        assert isinstance(step, int) and step >= 1 and str(step) == value.lstrip("0")


@pytest.mark.parametrize("value", ["²", "1²", "٣", "9" * 5000, " 4", "4.0", "0", "-1"])
def test_what_the_nan_step_parser_refused_badly_is_a_config_error(value: str) -> None:
    """Found by the property above: '²' is a digit to str.isdigit and no number to int (ValueError), and int refuses
    more than 4300 digits; '٣' was taken as step 3."""
    with pytest.raises(ConfigError, match=f"{NAN_HOOK}=.*: expected a step number"):
        parse_nan_step(value)


# --- GAN_PIPELINE_FAIL_AT --------------------------------------------------------------------------------------------

def forms() -> st.SearchStrategy[str]:
    """Every documented form (and near misses): STAGE, STAGE:once, kill:STAGE, train:N, kill-worker:N."""
    stage = st.sampled_from([*STAGES, "trian", "Train", ""])
    number = st.one_of(st.integers(0, 10**13).map(str), st.sampled_from(["²", "-1", "1.5", "٣", "9" * 30]))
    return st.one_of(
        stage, stage.map(lambda s: f"{s}:{ONCE}"), stage.map(lambda s: f"kill:{s}"), stage.map(lambda s: f"{s}:twice"),
        st.tuples(st.sampled_from(["train", "kill-worker", "evaluate"]), number).map(":".join), st.text(max_size=12),
    )


@BOUNDED
@given(st.lists(forms(), max_size=4).map(",".join) | st.text(max_size=30))
def test_any_fail_hook_value_parses_or_is_a_config_error(spec: str) -> None:
    hooks = parsed_or_refused(parse_failure_hook, spec, FAIL_HOOK)
    for point, arg in (hooks or {}).items():  # what parsed is a documented point with its argument
        assert (point in STAGES and arg in (None, ONCE)) or (point.removeprefix("kill:") in STAGES and arg is None) or (
            point in ("train", "kill-worker") and isinstance(arg, int) and arg >= 1), (point, arg)


@pytest.mark.parametrize("spec", ["train:²", "kill-worker:٣", "train:" + "9" * 5000, "train:0", "kill-worker:0", "trian", "ingest,ingest"])
def test_what_the_fail_hook_parser_let_through_or_raised_badly_is_a_config_error(spec: str) -> None:
    """Found by the property above: 'train:²' raised int's ValueError, 'kill-worker:٣' was taken as epoch 3, 'train:0'
    was accepted and never fires (no checkpoint precedes the first epoch); a form not listed was a ValueError, which the
    stage it broke retried and the CLI reported as the pipeline failing (exit 1)."""
    with pytest.raises(ConfigError, match=f"config error: {FAIL_HOOK}="):
        parse_failure_hook(spec)


def test_the_documented_forms_parse() -> None:
    assert parse_failure_hook(" ingest:once, train:2 ,kill:register,evaluate,kill-worker:1,") == {
        "ingest": ONCE, "train": 2, "kill:register": None, "evaluate": None, "kill-worker": 1}
    assert parse_failure_hook("") == {} and parse_nan_step("") is None and parse_nan_step("040") == 40


# --- the CLI: a bad hook stops a run before any work; an active one is said once -------------------------------------

def test_a_run_says_once_which_drills_are_active(cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: ANN001
    """A run that stops at its first check (the batch is larger than the data) has said, on stderr, which hooks act."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(FAIL_HOOK, " train:once, kill:register")
    monkeypatch.setenv(NAN_HOOK, "40")
    code, out, err = cli("run", "-c", SMOKE, "--set", "train.batch_size=4096")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[:2] == [f"[drill] {FAIL_HOOK}=train:once,kill:register is active: stages fail or are killed on purpose",
                         f"[drill] {NAN_HOOK}=40 is active: D's weights turn NaN after step 40, once"], err
    assert sum("[drill]" in line for line in (out + err).splitlines()) == 2 and lines[2].startswith("error: train.batch_size = 4096")


def test_no_drill_no_line(cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(FAIL_HOOK, raising=False)
    monkeypatch.delenv(NAN_HOOK, raising=False)
    code, out, err = cli("run", "-c", SMOKE, "--set", "train.batch_size=4096")
    assert code == 2 and "[drill]" not in out + err, err
