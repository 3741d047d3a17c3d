"""The Prefect flow: the stages in `STAGES` order (ingest -> train -> evaluate -> register), passing paths and ids through
the run record, never big objects."""

import time
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from gan import files
from pipelines.config import PipelineConfig
from pipelines.errors import first_line
from pipelines.stages import STAGES, Step
from pipelines.workspace import Workspace, workspace_lock

# Every stage's steps in `STAGES` order, as each stage module lists them: a new stage is its module and its name there.
STEPS: list[Step] = [step for stage in STAGES for step in import_module(f"pipelines.stages.{stage}").STEPS]


def run_stage(stage, timings: dict, output_exists: Callable[[object], bool], *args: object) -> object:  # noqa: ANN001
    """Run a task; if its cached output was deleted since, run it again for real. Record status and time, a failure
    included (the stage's error then fails the flow)."""
    started = time.time()
    state = stage(*args, return_state=True)
    if state.is_completed() and state.name == "Cached" and not output_exists(state.result()):
        print(f"[{stage.name}] cached output {state.result()} no longer exists; recomputing")
        state = stage.with_options(refresh_cache=True)(*args, return_state=True)
    status = "cached" if state.name == "Cached" else "ran" if state.is_completed() else "failed"
    timings[stage.name] = {"status": status, "seconds": round(time.time() - started, 2)}
    return state.result()  # re-raises the stage's error, failing the flow


@flow(name="gan-pipeline", log_prints=True)
def gan_pipeline(config: dict) -> dict:
    """Train, evaluate and register a GAN; each stage cached on its real inputs, each retried on its own."""
    flow_started = time.time()
    cfg = PipelineConfig.model_validate(config)
    stages: dict[str, dict] = {}
    run = {"flow_run_id": str(flow_run.id), "flow_started_unix": flow_started, "stages": stages}  # grows stage by stage
    with workspace_lock(Workspace.of(cfg.runtime.workdir)):  # one run at a time per working folder (held already under the CLI)
        try:
            for step in STEPS:  # each reads what the ones before it made from the run record
                run[step.key] = run_stage(step.task, stages, step.output_exists, *step.inputs(cfg, run)) if step.when(cfg) else None
        except Exception as err:
            # What ran, came from cache or failed, and what it made; and the error's first line.
            write_summary(cfg, run | {"failed": f"{type(err).__name__}: {first_line(err)}"})
            raise
    write_summary(cfg, run)
    return run


def write_summary(cfg: PipelineConfig, summary: dict) -> Path:
    """<workdir>/runs/<flow run id>.json: what each stage did (ran, cached or failed; seconds) and what it made; written by
    every run, a scheduled one too (the CLI adds its overhead figures to its own runs')."""
    path = Workspace.of(cfg.runtime.workdir).root / "runs" / f"{summary['flow_run_id']}.json"
    files.write_json(path, summary)
    return path
