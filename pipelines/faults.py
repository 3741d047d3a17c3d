"""The documented test hooks: `GAN_PIPELINE_FAIL_AT`, failures and SIGKILLs injected at named points of the stages
(`pipelines.stages.STAGES`), to exercise retries, caching and resumption (a form not listed is an error); and
`GAN_INJECT_NAN_AT_STEP`, the watchdog's drill: D's weights turned NaN after that step, once."""

import os
import re
import signal
from pathlib import Path

from gan.config import ConfigError
from pipelines.stages import STAGES

FAIL_HOOK = "GAN_PIPELINE_FAIL_AT"
NAN_HOOK = "GAN_INJECT_NAN_AT_STEP"
ALLOW_DRILLS = "GAN_PIPELINE_REGISTER_DRILLS"
ONCE = "once"
# A step or epoch number: ASCII digits, no more than a run could count to (str.isdigit takes '²', which int refuses, and
# int refuses more than 4300 digits).
NUMBER = re.compile(r"[0-9]{1,12}")

# Points inside a stage, past its start, where an error tests that a retry finishes the stage's work without doing it
# twice: `STAGE@POINT`, with where it is in words.
POINTS = {"register@logged": "with its MLflow run logged and no version registered yet"}
assert all(point.partition("@")[0] in STAGES for point in POINTS), POINTS


def drill_refusal(lineage: dict) -> str | None:
    """Why register refuses a model a drill trained (its lineage names the drill), unless GAN_PIPELINE_REGISTER_DRILLS=1
    (tests of the registry's side of a drill); None for a normal run's."""
    drill = lineage.get("drill")
    if not drill or os.environ.get(ALLOW_DRILLS) == "1":
        return None
    hooks = ", ".join(f"{k}={v}" for k, v in drill.items())
    return f"a drill trained it ({hooks}); its model is for tests (set {ALLOW_DRILLS}=1 to register it)"


def nan_at_step() -> int | None:
    """The NaN drill's step (GAN_INJECT_NAN_AT_STEP), read by the driver and handed to every worker (so it acts on a
    cluster too); None when unset. Part of the training run's identity: a drill's checkpoint is never a normal run's."""
    return parse_nan_step(os.environ.get(NAN_HOOK, ""))


def parse_nan_step(value: str) -> int | None:
    """GAN_INJECT_NAN_AT_STEP's value: a step number (1 or more), None when empty, else a one-line ConfigError."""
    if not value:
        return None
    if not NUMBER.fullmatch(value) or int(value) < 1:
        raise ConfigError(f"config error: {NAN_HOOK}={value!r}: expected a step number (1 or more), or unset")
    return int(value)


class InjectedFailure(RuntimeError):
    """Raised on purpose by the test hook, to exercise retries, caching and resumption."""


def failure_hook() -> dict[str, int | str | None]:
    """Parse the documented test hook, e.g. GAN_PIPELINE_FAIL_AT='ingest:once,train:1,evaluate,kill:register'.

    `stage` fails that stage on every attempt (its retries fail too, and so does the run); `stage:once` fails only the
    first attempt of the stage in a run (Prefect's retry then recovers it within the run); `stage@point` and
    `stage@point:once` do the same at a named point inside the stage (POINTS: `register@logged`, with the MLflow run
    logged and no version registered yet);
    `kill:stage` SIGKILLs the process the flow runs in, once per working folder (a marker file `.fail-hook-kill-STAGE`
    in it records the kill, so the re-run goes on), where a kill leaves the most behind: ingest with a shard written
    and no manifest, train as it starts, evaluate with its pictures written aside and its report not yet published,
    register with the model version registered and its aliases not yet moved;
    `train:N` makes rank 0 crash at the first batch after the checkpoint of epoch N, once Ray Train's controller has
    registered that checkpoint (the group it restores starts past epoch N and does not crash again); `kill-worker:N`
    makes the last rank SIGKILL its own process there, the same way (`pipelines.cluster.worker.RayTrainSink.batch_start`;
    N is 1 or more: no checkpoint precedes the first epoch). A form not listed here is a ConfigError, so that a misspelt
    hook cannot pass silently.
    """
    return parse_failure_hook(os.environ.get(FAIL_HOOK, ""))


def parse_failure_hook(spec: str) -> dict[str, int | str | None]:
    """GAN_PIPELINE_FAIL_AT's value (see `failure_hook`) as {point: argument}; a form not listed is a one-line ConfigError."""
    hooks: dict[str, int | str | None] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, arg = item.partition(":")
        if name == "kill" and arg in STAGES:
            key, value = f"kill:{arg}", None
        elif (name in STAGES or name in POINTS) and arg in ("", ONCE):
            key, value = name, arg or None
        elif name in ("train", "kill-worker") and NUMBER.fullmatch(arg) and int(arg) >= 1:
            key, value = name, int(arg)
        else:
            raise ConfigError(f"config error: {FAIL_HOOK}={spec!r}: unknown form {item!r}; expected STAGE, STAGE:once, POINT, "
                              f"POINT:once, kill:STAGE, train:N or kill-worker:N (N an epoch, 1 or more) with STAGE one of "
                              f"{', '.join(STAGES)} and POINT one of {', '.join(POINTS)}")
        if key in hooks:
            raise ConfigError(f"config error: {FAIL_HOOK}={spec!r}: names {key!r} twice")
        hooks[key] = value
    return hooks


def drills() -> list[str]:
    """A line for each test hook set in this environment, each read first (a bad one is a ConfigError): a run prints
    them as it starts, so that a drill is never taken for a normal run."""
    lines = []
    if hooks := failure_hook():
        spec = ",".join(point if arg is None else f"{point}:{arg}" for point, arg in hooks.items())  # as read: one line
        lines.append(f"[drill] {FAIL_HOOK}={spec} is active: stages fail or are killed on purpose")
    if (step := nan_at_step()) is not None:
        lines.append(f"[drill] {NAN_HOOK}={step} is active: D's weights turn NaN after step {step}, once")
    return lines


def maybe_fail(stage: str, kill_here: bool = True, at: str = "") -> None:
    """At a stage's start, or at its named point `at` (POINTS): raise InjectedFailure for the hook's every-attempt form, or
    its `:once` form on the first attempt of this run's task run; at the start with `kill_here`, also the `kill:stage`
    point (stages that have a later one call `maybe_kill` there)."""
    from prefect.runtime import task_run  # noqa: PLC0415 - the task run's attempt number; 0 outside a task run

    point = f"{stage}@{at}" if at else stage
    assert point in STAGES or point in POINTS, f"{point}: not a fault point of {FAIL_HOOK} (POINTS)"
    where = f" {POINTS[point]}" if at else ""
    hooks = failure_hook()
    if point in hooks and hooks[point] is None:
        raise InjectedFailure(f"{point}: failure injected{where} by {FAIL_HOOK}={os.environ[FAIL_HOOK]!r} (every attempt)")
    if point in hooks and hooks[point] == ONCE and task_run.run_count <= 1:
        raise InjectedFailure(f"{point}: transient failure injected{where} by {FAIL_HOOK}={os.environ[FAIL_HOOK]!r} (first attempt only)")
    if kill_here and not at:
        maybe_kill(stage)


def maybe_kill(stage: str, workdir: str | None = None, where: str = "as it starts") -> None:
    """SIGKILL this process (the flow's) for `kill:stage`, unless the marker in the working folder says it was done once.
    The working folder is `workdir`, or that of the running task's `cfg` parameter."""
    if f"kill:{stage}" not in failure_hook():
        return
    if workdir is None:
        from prefect.runtime import task_run  # noqa: PLC0415

        cfg = task_run.parameters.get("cfg")
        assert cfg is not None, f"{FAIL_HOOK}: kill:{stage} outside a stage task names no working folder"
        workdir = cfg.runtime.workdir
    marker = Path(workdir).expanduser() / f".fail-hook-kill-{stage}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    print(f"[{stage}] SIGKILL injected by {FAIL_HOOK}={os.environ[FAIL_HOOK]!r} {where} (pid {os.getpid()})", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
