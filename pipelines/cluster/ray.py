"""Starting or joining Ray, and the rules for where the training driver runs: here (a local Ray, or the cluster at
RAY_ADDRESS through its GCS or ray:// address) or on the cluster as a Ray Job (RAY_ADDRESS naming its dashboard)."""

import os
from typing import TYPE_CHECKING

from pipelines.errors import UsageError
from pipelines.provenance import GAN_DIR, PIPELINES_DIR

if TYPE_CHECKING:
    from pipelines.config import PipelineConfig

RAY_RUN_RECORD = "checkpoint_manager_snapshot.json"  # Ray Train keeps it in the run's folder, to resume the run from


# For Ray's processes. The controller polls workers every 0.25 s instead of 2 s (each ray.train.report
# waits for that poll); workers print plainly instead of through Ray Train's logger, which would
# show every line twice.
RAY_WORKER_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
}


def dashboard_address() -> str | None:
    """RAY_ADDRESS when it names a cluster's dashboard (http(s)://host:8265): Ray Jobs go there; drivers cannot join it."""
    address = os.environ.get("RAY_ADDRESS", "")
    return address if address.startswith(("http://", "https://")) else None


def cluster_runtime_env(env_vars: dict[str, str] | None = None) -> dict:
    """What a remote cluster's processes need: this library shipped to them, and the Ray Train settings passed on."""
    env = {key: os.environ.get(key, value) for key, value in RAY_WORKER_ENV.items()}
    return {"py_modules": [str(GAN_DIR), str(PIPELINES_DIR)], "env_vars": {**env, **(env_vars or {})}}


def refuse_dashboard() -> None:
    """A driver in this process joins a cluster through its GCS or ray:// address; a dashboard address takes jobs only."""
    if dashboard_address():
        raise UsageError(
            f"RAY_ADDRESS={dashboard_address()} is a dashboard address, which takes Ray Jobs only (ray.driver: job or auto); "
            "to run the driver in this process, set RAY_ADDRESS to the cluster's GCS address (host:6379) or ray://host:10001"
        )


def trains_as_job(cfg: "PipelineConfig") -> bool:
    """`ray.driver`: job, or auto with RAY_ADDRESS naming a dashboard (where only jobs go)."""
    return cfg.ray.driver == "job" or (cfg.ray.driver == "auto" and dashboard_address() is not None)


def check_driver(cfg: "PipelineConfig") -> None:
    """`ray.driver` against RAY_ADDRESS, before any service starts: a job needs a cluster to go to, and a driver in this
    process cannot join one through its dashboard address."""
    if cfg.ray.driver == "job" and not os.environ.get("RAY_ADDRESS"):
        raise UsageError("ray.driver = 'job' needs RAY_ADDRESS: the cluster's dashboard (http://head:8265), GCS or ray:// address")
    if not trains_as_job(cfg):
        refuse_dashboard()


def ensure_ray(dashboard: bool = False) -> None:
    """Connect to RAY_ADDRESS if set, else start (once per process) a local Ray on this machine's CPUs, with its dashboard
    if asked (`ray.dashboard`)."""
    import ray  # noqa: PLC0415 - heavy import, only for stages that use Ray

    if ray.is_initialized():
        return
    refuse_dashboard()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=cluster_runtime_env())
        print(f"[ray] connected to the cluster at {ray.get_runtime_context().gcs_address}")
    else:
        # The dashboard is a dozen processes (~90 MB resident each; BENCHMARKS.md). It also serves the state API
        # that Ray Train's placement-group cleaner asks whether the controller lives: without it, the cleaner logs a
        # warning every second (kept out of the log file but for every hundredth: console.REPEATED).
        context = ray.init(num_cpus=os.cpu_count(), include_dashboard=dashboard, dashboard_host="127.0.0.1", logging_level="WARNING")
        print(f"[ray] local cluster started; dashboard at http://{context.dashboard_url}" if dashboard else
              "[ray] local cluster started (no dashboard: ray.dashboard=true starts it)")
    from pipelines import console  # noqa: PLC0415

    console.attach_ray()
