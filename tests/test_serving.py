"""The champion, served: `mlflow models serve models:/NAME@champion` answers a JSON request of latents and labels with
images as the registered signature says, and a request the model cannot take with a 400 that says why."""

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest

from pipelines.stages.ingest import ingest
from tests import services
from tests.registry_store import checkpoints, config, registered
from tests.test_training_loop import SHAPE

CHAMPION = "models:/m@champion"


def post(url: str, body: dict) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of a JSON POST, errors included."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.fixture
def scoring_url(client: mlflow.MlflowClient, tmp_path: Path, one_thread: None) -> Iterator[str]:
    """A conditional generator, registered through register() from a tiny real checkpoint as m's champion, served by
    `mlflow models serve` on loopback with the test's SQLite store as MLFLOW_TRACKING_URI; the server's URL."""
    cfg = config(tmp_path)
    (folder,) = checkpoints(tmp_path / "gan-work" / "ray_results" / "train-test", epochs=1, conditional=True)
    assert registered(cfg, ingest(cfg), folder, 50.0)["champion"]

    # The server runs `uvicorn` from PATH as a child: it leads a process group of its own, and the group is stopped.
    port = services.free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "PATH": f"{services.BIN}{os.pathsep}{os.environ['PATH']}"}
    command = [services.BIN / "mlflow", "models", "serve", "-m", CHAMPION, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    process = services.start(command, tmp_path / "serve.log", env, new_session=True)
    try:
        services.wait_healthy(f"http://127.0.0.1:{port}/ping", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        services.stop_group(process)


@pytest.mark.integration
def test_the_served_champion_turns_latents_and_labels_into_images(scoring_url: str) -> None:
    signature = mlflow.models.get_model_info(CHAMPION).signature
    assert signature.inputs.input_names() == ["z", "label"] and signature.outputs.inputs[0].shape == (-1, *SHAPE)
    z_dim = signature.inputs.input_dict()["z"].shape[1]
    z = np.random.default_rng(0).standard_normal((4, z_dim)).astype(np.float32)  # [4, z_dim]
    z[1] = z[0]
    labels = [3, 7, 0, 9]

    # The scoring protocol's named-tensor form: {"inputs": {name: nested lists}}; the answer is {"predictions": images}.
    status, answer = post(f"{scoring_url}/invocations", {"inputs": {"z": z.tolist(), "label": labels}})
    assert status == 200, answer
    images = np.asarray(answer["predictions"], dtype=np.float32)  # [4, C, H, W]
    assert images.shape == (4, *SHAPE) and images.min() >= 0 and images.max() <= 1
    assert np.abs(images[0] - images[1]).max() > 1e-3  # the same noise with another label: another image
    local = mlflow.pyfunc.load_model(CHAMPION).predict({"z": z, "label": np.array(labels)})
    np.testing.assert_allclose(images, local, atol=1e-5)  # what the registered model computes in this process

    # A request the signature or the model does not allow is the client's error, a 400 that says why: schema enforcement
    # (MLflow's) for the width of z and a missing input, the model's own check for a label out of range.
    for inputs, said in (
        ({"z": z[:, 1:].tolist(), "label": labels}, f"Shape of input (4, {z_dim - 1}) does not match expected shape (-1, {z_dim})"),
        ({"z": z.tolist()}, "Model is missing inputs ['label']"),
        ({"z": z.tolist(), "label": [3, 7, 0, 10]}, "input 'label' holds 0..10; this generator knows 0..9"),
    ):
        status, answer = post(f"{scoring_url}/invocations", {"inputs": inputs})
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE" and said in answer["message"], answer
