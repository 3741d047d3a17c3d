"""The train stage as a Ray Job: its driver runs on the cluster, so the training outlives the process that started it.

The train stage submits `python -m pipelines.cluster.job_main` with the resolved config, follows the job's status and output
(the epoch lines reach the task's log as with a local driver), stops the job when the task is cancelled or killed,
and reads the job's result from its last line. A retried task submits a new job with the same Ray Train run name and
storage, so training resumes from the latest checkpoint. The working folder must be one path that every node sees
(a shared volume): the dataset is read from it, and the checkpoints are written beside it unless `ray.storage_path`
names a URI (s3://, gs://) every node can reach.
"""

import json
import os
import re
import time
import uuid
from pathlib import Path

from pipelines import console
from pipelines.cluster.ray import check_driver, cluster_runtime_env
from pipelines.config import PipelineConfig
from pipelines.errors import user_errors
from pipelines.faults import FAIL_HOOK, NAN_HOOK
from pipelines.workspace import Workspace, ray_storage

SPEC_ENV = "GAN_PIPELINE_TRAIN_JOB"  # the job's input: {"config", "dataset_dir", "run_name", "lineage", "files"}
RESULT = "[train-job] result "  # the job's last line: the train stage's output, as JSON
USER_ERROR = "[train-job] user error "  # a user's mistake found on the cluster: {"type": ..., "message": ...}
# What Ray puts before a line it forwards from one of its processes: "(RayTrainWorker pid=123, ip=10.0.0.2) ", coloured.
RAY_PREFIX = re.compile(r"^(?:\x1b\[[\d;]*m)?\((?:[^()]|\([^()]*\))*\)(?:\x1b\[[\d;]*m)? ")
POLL_S = 1.0
STOP_WAIT_S = 60


def train_as_job(cfg: PipelineConfig, dataset_dir: str, run_name: str, lineage: dict, files: dict[str, str | None], logger: object = None) -> dict:
    """Submit the training driver (`cluster/fit.py`) to the cluster at RAY_ADDRESS as Ray Train run `run_name`, follow
    it to the end, and return its output. `files` (the parent's state, the quick-FID yardstick) are paths in the
    working folder, which every node sees."""
    from ray.job_submission import JobStatus, JobSubmissionClient  # noqa: PLC0415

    check_driver(cfg)
    # Relative paths would resolve in the job's own folder on the head: send absolute ones, which every node must see.
    workspace = Workspace.of(cfg.runtime.workdir)
    config = cfg.model_copy(update={
        "runtime": cfg.runtime.model_copy(update={"workdir": str(workspace.root)}),
        "ray": cfg.ray.model_copy(update={"storage_path": ray_storage(cfg.ray.storage_path, workspace)}),
    })
    spec = {"config": config.model_dump(mode="json"), "dataset_dir": str(Path(dataset_dir).resolve()), "run_name": run_name,
            "lineage": lineage, "files": files}
    env = {SPEC_ENV: json.dumps(spec), **{hook: os.environ[hook] for hook in (FAIL_HOOK, NAN_HOOK) if os.environ.get(hook)}}  # the drills too
    client = JobSubmissionClient()  # RAY_ADDRESS, in any of its forms
    job_id = client.submit_job(
        entrypoint="python -m pipelines.cluster.job_main", submission_id=f"{run_name[:26]}-{uuid.uuid4().hex[:8]}",
        runtime_env=cluster_runtime_env(env), metadata={"run_name": run_name, "dataset_dir": spec["dataset_dir"]},
    )
    print(f"[train] submitted Ray Job {job_id} to {client.get_address()} (run {run_name}); `ray job logs {job_id}` shows all of it")
    try:
        with console.training(cfg.train.epochs, logger):
            status = follow(client, job_id)
    except BaseException:  # the task was cancelled (SIGTERM from Prefect), interrupted or failed here: the job goes too
        stop(client, job_id)
        raise
    logs = client.get_job_logs(job_id)
    if status != JobStatus.SUCCEEDED:
        raise job_error(job_id, status, client.get_job_info(job_id).message, logs)
    result = [line[len(RESULT):] for line in logs.splitlines() if line.startswith(RESULT)]
    assert result, f"Ray Job {job_id} succeeded without printing its result"
    return {**json.loads(result[-1]), "ray_job": {"id": job_id, "address": client.get_address()}}


def follow(client, job_id: str) -> object:  # noqa: ANN001 - ray's JobSubmissionClient
    """Poll the job until it ends, passing its new output lines on as a local driver's would be; its final status."""
    printed = 0
    while True:
        status = client.get_job_status(job_id)  # before the logs: a finished job's logs are then complete
        logs = client.get_job_logs(job_id)
        complete = logs.rfind("\n") + 1
        lines = logs[printed:complete].splitlines()
        printed = max(printed, complete)
        if lines:
            console.forward({"lines": [RAY_PREFIX.sub("", line) for line in lines], "task_name": f"ray-job {job_id}"}, _print)
        if status.is_terminal():
            return status
        time.sleep(POLL_S)


def stop(client, job_id: str) -> None:  # noqa: ANN001
    """Stop the job and wait (a while) until Ray says it ended, so no training is left running."""
    print(f"[train] stopping Ray Job {job_id}", flush=True)
    client.stop_job(job_id)
    deadline = time.time() + STOP_WAIT_S
    while time.time() < deadline and not client.get_job_status(job_id).is_terminal():
        time.sleep(POLL_S)


def job_error(job_id: str, status: object, message: str | None, logs: str) -> Exception:
    """A user's mistake found on the cluster as its own error (not retried); anything else names the job and its end."""
    found = [json.loads(line[len(USER_ERROR):]) for line in logs.splitlines() if line.startswith(USER_ERROR)]
    kinds = {kind.__name__: kind for kind in user_errors()}
    if found and found[-1]["type"] in kinds:
        return kinds[found[-1]["type"]](found[-1]["message"])
    tail = [line for line in logs.splitlines() if line.strip()][-1:] or ["(no output)"]
    return RuntimeError(f"Ray Job {job_id} ended {status}: {message or ''} (its last line: {tail[0][:300]}); `ray job logs {job_id}` shows all")


def _print(data: dict, ignore_prefix: bool = False) -> None:
    for line in data["lines"]:
        print(line, flush=True)
