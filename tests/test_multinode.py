"""A real two-node Ray cluster on this machine (`ray start --head` and a second `ray start --address`), with a
`prefect server` and an `mlflow server` as separate processes: the same command trains across both nodes, runs its
train stage as a Ray Job that stops with the flow, and survives losing a node by resuming on the re-run.

Each node declares one `gan_slot` and each worker needs one (`ray.worker_resources`), so Ray must put the two
workers on different nodes. Each node has its own temporary folder, as on two machines (sharing one, both nodes'
log monitors would forward every line twice). Each node declares 2 logical CPUs (both share this machine's two cores): a worker reserves
0.5, and Ray Data's read tasks need a whole one beside it. The working folder (dataset, checkpoints) is a path both nodes see.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from ray.util.state.exception import ServerUnavailable

from tests.services import BIN, free_port, mlflow_server, start, stop, stop_group, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
SLOT = {"gan_slot": 1}

pytestmark = pytest.mark.integration


class Cluster:
    """The head stays up for the whole module; the second node can be killed and started again."""

    def __init__(self, root: Path, temp: Path, env: dict, head: str):
        self.root, self.temp, self.env, self.head = root, temp, env, head
        self.node: subprocess.Popen | None = None
        self.starts = 0
        self.services: dict[str, str] = {}

    def start_node(self, tries: int = 2) -> None:
        """Start the second node and wait until the head lists it alive. On two busy cores a join can stall; a node
        that has not joined in time is stopped and started once more, and its log's tail goes into the error."""
        for attempt in range(tries):
            self.starts += 1
            log = self.root / f"node-{self.starts}.log"
            self.node = start(
                [BIN / "ray", "start", "--address", self.head, "--num-cpus", "2", "--resources", json.dumps(SLOT),
                 "--temp-dir", str(self.temp / "n"), "--block"],
                log, self.env, new_session=True,
            )
            try:
                self.wait_nodes(2, alive=self.node)
                return
            except TimeoutError as err:
                stop_group(self.node)
                self.node = None
                if attempt == tries - 1:
                    raise TimeoutError(f"{err}; the node's log ends:\n{log.read_text()[-3000:]}") from None

    def kill_node(self) -> None:
        """SIGKILL the second node's raylet and everything of its process group: a machine lost, not a clean stop."""
        assert self.node is not None
        os.killpg(self.node.pid, signal.SIGKILL)
        self.node.wait()
        self.node = None

    def wait_nodes(self, count: int, seconds: float = 90, alive: subprocess.Popen | None = None) -> None:
        """Until `count` nodes are alive; a TimeoutError early if the `alive` process (a node being started) exits."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            if alive is not None and alive.poll() is not None:
                raise TimeoutError(f"the node's `ray start` exited with {alive.returncode} before joining")
            with contextlib.suppress(ServerUnavailable):  # the dashboard starts a little after `ray start` returns
                if len(alive_nodes(self.env["DASHBOARD"])) == count:
                    return
            time.sleep(1)
        raise TimeoutError(f"{count} alive Ray nodes expected, got {alive_nodes(self.env['DASHBOARD'])}")


def alive_nodes(dashboard: str) -> list[str]:
    from ray.util.state import list_nodes

    return [n.node_id for n in list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)]


def train_worker_nodes(dashboard: str) -> dict[str, str]:
    """Every Ray Train worker actor the cluster has run: actor id -> node id."""
    from ray.util.state import list_actors

    actors = list_actors(address=dashboard, filters=[("class_name", "=", "RayTrainWorker")], limit=1000, raise_on_missing_output=False)
    return {a.actor_id: a.node_id for a in actors}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    root = tmp_path_factory.mktemp("cluster")
    # `python` in a Ray Job's entrypoint is this environment's; a lost node is noticed within seconds, not 30.
    env = {
        **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PREFECT_HOME": str(root / "prefect-home"),
        "RAY_AUTH_MODE": "disabled", "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
    }
    env.pop("RAY_ADDRESS", None)
    prefect_port, ray_port, dashboard_port = free_port(), free_port(), free_port()
    temp = Path(tempfile.mkdtemp(prefix="gan-ray-"))  # short: Ray's socket paths under it must stay within 107 bytes
    head = subprocess.run(
        [BIN / "ray", "start", "--head", "--port", str(ray_port), "--num-cpus", "2", "--resources", json.dumps(SLOT),
         "--temp-dir", str(temp / "h"), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    env["DASHBOARD"] = f"http://127.0.0.1:{dashboard_port}"
    cluster = Cluster(root, temp, env, f"127.0.0.1:{ray_port}")
    services: list[subprocess.Popen] = []
    try:
        assert head.returncode == 0, head.stderr[-2000:]
        cluster.start_node()  # before the services start: their start-up would compete with the node's for the two cores
        prefect = start([BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port), "--analytics-off"],
                        root / "prefect.log", env)
        mlflow, mlflow_uri = mlflow_server(root, env)
        services += [mlflow, prefect]
        wait_healthy(f"http://127.0.0.1:{prefect_port}/api/health", prefect)
        wait_healthy(f"{mlflow_uri}/health", mlflow)
        cluster.services = {"PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api", "MLFLOW_TRACKING_URI": mlflow_uri}
        yield cluster
    finally:
        if cluster.node is not None:
            stop_group(cluster.node)
        subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
        stop(*services)
        shutil.rmtree(temp, ignore_errors=True)


def pipeline(cluster: Cluster, tmp_path: Path, ray_address: str, **overrides: dict) -> tuple[list, dict]:
    """The command line and environment of a smoke run on the cluster, with both workers needing a slot."""
    cfg = yaml.safe_load((ROOT / "conf" / "smoke.yaml").read_text())
    cfg["ray"].update(worker_resources=SLOT, cpus_per_worker=0.5)
    for section, values in overrides.items():
        cfg.setdefault(section, {}).update(values)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**cluster.env, **cluster.services, "RAY_ADDRESS": ray_address, "PREFECT_HOME": str(tmp_path / "client-prefect-home")}
    env.pop("GAN_PIPELINE_FAIL_AT", None)
    return [BIN / "gan-pipeline", "run", "-c", "run.yaml"], env


def run(command: list, tmp_path: Path, env: dict, log: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    (tmp_path / log).write_text(done.stdout + done.stderr)
    return done


def latest_summary(tmp_path: Path) -> dict:
    runs = sorted((tmp_path / "gan-work" / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text())


def wait_for_checkpoint(storage: Path, process: subprocess.Popen, seconds: float = 300) -> None:
    """Until the run has saved a checkpoint (of epoch 1 or later) in its Ray Train run folder under `storage`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert process.poll() is None, f"the run ended ({process.returncode}) before its first checkpoint"
        if list(storage.glob("train-*/checkpoint_*/metrics.json")):
            return
        time.sleep(0.5)
    raise TimeoutError("no checkpoint within the time")


def test_training_spreads_over_two_nodes_survives_losing_one_and_uses_the_services(cluster: Cluster, tmp_path: Path) -> None:
    """Process driver (RAY_ADDRESS = the GCS address), checkpoints in storage named by a URI (`ray.storage_path`; here
    a shared path, file://, as s3:// or gs:// would be on machines that share no volume). The second node is SIGKILLed
    after the first checkpoint: the run fails with one line; with the node back, the re-run resumes from the storage and
    hands on a local copy of the final checkpoint in the working folder."""
    store = tmp_path / "shared-store"
    command, env = pipeline(
        cluster, tmp_path, cluster.head, train={"epochs": 12, "seed": 12},
        ray={"max_failures": 1, "placement_retries": 0, "storage_path": f"file://{store}"},
    )
    env["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "10"
    before = train_worker_nodes(cluster.env["DASHBOARD"])
    with (tmp_path / "first.log").open("w") as out:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_checkpoint(store, first)
        # Ray: the run joined the cluster, and its two workers run on the two nodes.
        workers = {actor: node for actor, node in train_worker_nodes(cluster.env["DASHBOARD"]).items() if actor not in before}
        assert len(workers) == 2 and len(set(workers.values())) == 2, workers
        assert set(workers.values()) == set(alive_nodes(cluster.env["DASHBOARD"]))
        cluster.kill_node()
        code = first.wait(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    output = (tmp_path / "first.log").read_text()
    port = cluster.head.rsplit(":", 1)[1]
    assert re.search(rf"\[ray\] connected to the cluster at [\d.]+:{port}\b", output)
    assert code != 0, output[-3000:]
    # One line: the workers could not be placed again after the node went, and where the checkpoints wait.
    assert "the Ray cluster could not place 2 training workers" in output, output[-3000:]
    assert "Traceback" not in output.split("could not place")[-1]
    assert f"kept in file://{store}/train-" in output, output[-3000:]

    cluster.start_node()
    done = run(command, tmp_path, env, "second.log")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = latest_summary(tmp_path)
    trained = summary["train"]
    assert trained["metrics"]["resumed_from_epoch"] >= 1
    assert trained["metrics"]["images_rank0"] > 0 and trained["metrics"]["images_rank1"] > 0
    assert trained["checkpoint_uri"].startswith(f"file://{store}/train-"), trained
    local = Path(trained["checkpoint"])
    assert local.is_dir() and local.is_relative_to(tmp_path / "gan-work" / "checkpoints"), trained
    assert local.name == trained["checkpoint_uri"].rsplit("/", 1)[-1] and not (tmp_path / "gan-work" / "ray_results").exists()

    # MLflow: the version lives on the server, and no local store was made.
    import mlflow

    uri = cluster.services["MLFLOW_TRACKING_URI"]
    champion = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("smoke-gan", "champion")
    assert str(champion.version) == str(summary["registered"]["version"])
    assert champion.tags["prefect_flow_run_id"] == summary["flow_run_id"]
    assert not (tmp_path / "gan-work" / "mlflow.db").exists()

    # Prefect: the flow run is recorded, completed, on the server.
    with urllib.request.urlopen(f"{cluster.services['PREFECT_API_URL']}/flow_runs/{summary['flow_run_id']}", timeout=10) as response:
        assert json.load(response)["state"]["type"] == "COMPLETED"

    # The registered model loads from the server in a fresh process.
    sample = run([BIN / "gan-pipeline", "sample", "--model", "models:/smoke-gan@champion", "-n", "8", "--out", "grid.png"],
                 tmp_path, env, "sample.log")
    assert sample.returncode == 0, sample.stderr[-2000:]
    assert (tmp_path / "grid.png").is_file()


def test_train_stage_as_a_ray_job_stops_with_the_flow_and_the_next_job_resumes(cluster: Cluster, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    jobs = JobSubmissionClient(cluster.env["DASHBOARD"])
    known = {job.submission_id for job in jobs.list_jobs()}
    # The dashboard's address: `ray.driver: auto` submits the train stage as a Ray Job. Long enough to be stopped midway.
    command, env = pipeline(cluster, tmp_path, cluster.env["DASHBOARD"], train={"epochs": 12, "seed": 11})
    with (tmp_path / "first.log").open("w") as out:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_checkpoint(tmp_path / "gan-work" / "ray_results", first)
        first.send_signal(signal.SIGTERM)  # what Prefect's runner does to cancel a deployed flow run
        # Prefect marks the task and flow run Crashed, then lets the signal end the process, after the job was stopped.
        assert first.wait(timeout=120) == -signal.SIGTERM
    finally:
        if first.poll() is None:
            first.kill()
    (stopped,) = [job for job in jobs.list_jobs() if job.submission_id not in known]
    assert stopped.status == JobStatus.STOPPED, (stopped.status, (tmp_path / "first.log").read_text()[-3000:])
    assert "stopping Ray Job" in (tmp_path / "first.log").read_text()

    done = run(command, tmp_path, env, "second.log")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = latest_summary(tmp_path)
    job_id = summary["train"]["ray_job"]["id"]
    assert job_id != stopped.submission_id and jobs.get_job_status(job_id) == JobStatus.SUCCEEDED
    # The new job is the same Ray Train run (name and storage), so it went on from the stopped job's checkpoint.
    assert jobs.get_job_info(job_id).metadata["run_name"] == stopped.metadata["run_name"]
    assert summary["train"]["metrics"]["resumed_from_epoch"] >= 1
    assert Path(summary["train"]["checkpoint"]).is_relative_to(tmp_path / "gan-work" / "ray_results" / stopped.metadata["run_name"])
    # Its output reached this process as a local driver's would: the workers' nodes and every epoch.
    assert "[train] rank 1 of 2 on node" in done.stdout + done.stderr
    assert "[train] epoch 12/12" in done.stdout + done.stderr
