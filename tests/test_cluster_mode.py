"""The same command against shared services named by the environment: a Ray cluster started with
`ray start --head`, a `prefect server`, and an `mlflow server`, all as separate processes."""

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.services import BIN, free_port, mlflow_server, start, stop, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "conf" / "smoke.yaml")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("services")
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect-home"), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    prefect_port, ray_port = free_port(), free_port()
    prefect = start([BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port), "--analytics-off"],
                    root / "prefect.log", env)
    mlflow, mlflow_uri = mlflow_server(root, env)
    ray = subprocess.run(
        [BIN / "ray", "start", "--head", "--port", str(ray_port), "--num-cpus", "2", "--include-dashboard", "false"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    try:
        assert ray.returncode == 0, ray.stderr[-2000:]
        wait_healthy(f"http://127.0.0.1:{prefect_port}/api/health", prefect)
        wait_healthy(f"{mlflow_uri}/health", mlflow)
        yield {
            "RAY_ADDRESS": f"127.0.0.1:{ray_port}",
            "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
            "MLFLOW_TRACKING_URI": mlflow_uri,
        }
    finally:
        subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
        stop(mlflow, prefect)


def test_same_command_uses_the_services_named_by_the_environment(services: dict, tmp_path: Path) -> None:
    env = {**os.environ, **services, "PREFECT_HOME": str(tmp_path / "client-prefect-home")}
    env.pop("GAN_PIPELINE_FAIL_AT", None)
    done = subprocess.run([BIN / "gan-pipeline", "run", "-c", SMOKE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    (tmp_path / "run.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(next((tmp_path / "gan-work" / "runs").glob("*.json")).read_text())

    # Ray: the run joined the existing cluster instead of starting its own.
    port = services["RAY_ADDRESS"].rsplit(":", 1)[1]
    assert re.search(rf"\[ray\] connected to the cluster at [\d.]+:{port}\b", done.stdout + done.stderr)
    assert summary["train"]["metrics"]["images_rank0"] > 0 and summary["train"]["metrics"]["images_rank1"] > 0

    # MLflow: the version lives on the server, and no local store was made.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=services["MLFLOW_TRACKING_URI"], registry_uri=services["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias("smoke-gan", "champion")
    assert str(champion.version) == str(summary["registered"]["version"])
    assert champion.tags["prefect_flow_run_id"] == summary["flow_run_id"]
    assert not (tmp_path / "gan-work" / "mlflow.db").exists()

    # Prefect: the flow run is recorded, completed, on the server.
    request = urllib.request.Request(f"{services['PREFECT_API_URL']}/flow_runs/{summary['flow_run_id']}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["state"]["type"] == "COMPLETED"

    # The registered model loads from the server in a fresh process.
    sample = subprocess.run(
        [BIN / "gan-pipeline", "sample", "--model", "models:/smoke-gan@champion", "-n", "8", "--out", "grid.png"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert sample.returncode == 0, sample.stderr[-2000:]
    assert (tmp_path / "grid.png").is_file()
