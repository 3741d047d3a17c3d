"""The champion, served: `gan-pipeline serve --model models:/NAME@champion` (MLflow's scoring server) answers a JSON
request of latents and labels with images as the registered signature says, and a request the model cannot take with a
400 that says why, and goes on answering."""

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pytest

from pipelines.stages.ingest import ingest
from tests import services
from tests.registry_store import checkpoints, config, registered
from gan.sampling import MAX_BATCH
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


@contextmanager
def served(tmp_path: Path, **model: object) -> Iterator[str]:
    """A tiny generator (`model` overrides model keys) registered through register() as m's champion in the working
    folder tmp_path/gan-work, served as docs/registry.md says: `.venv/bin/gan-pipeline serve` from the folder holding
    gan-work/, with the virtualenv's bin folder not on PATH (the server's `uvicorn` child must still be found); its URL."""
    cfg = config(tmp_path)
    (folder,) = checkpoints(tmp_path / "gan-work" / "ray_results" / "train-test", epochs=1, **model)
    assert registered(cfg, ingest(cfg), folder, 50.0)["champion"]

    # The server leads a process group of its own (it and its uvicorn child), and the group is stopped.
    port = services.free_port()
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != services.BIN)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PATH": path}
    command = [services.BIN / "gan-pipeline", "serve", "--model", CHAMPION, "--port", str(port)]
    process = services.start(command, tmp_path / "serve.log", env, new_session=True, cwd=tmp_path)
    try:
        services.wait_healthy(f"http://127.0.0.1:{port}/ping", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        services.stop_group(process)


@pytest.fixture
def scoring_url(client: mlflow.MlflowClient, tmp_path: Path, one_thread: None) -> Iterator[str]:
    """A conditional champion, served (`served`)."""
    with served(tmp_path, conditional=True) as url:
        yield url


def refused(url: str, inputs: dict, said: str, code: str = "INVALID_PARAMETER_VALUE") -> None:
    """The request is answered 400, the client's error, with this error code and `said` in the reason (MLflow's parser
    answers values that are no numbers with BAD_REQUEST; the signature's checks and the model's with INVALID_PARAMETER_VALUE)."""
    status, answer = post(f"{url}/invocations", {"inputs": inputs})
    assert status == 400 and answer["error_code"] == code and said in answer["message"], (status, answer)


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
    # (MLflow's) for the width of z, a missing input and values that are no numbers; the model's own checks for the rest,
    # before anything is generated. JSON's NaN (Python's json writes it) and null both reach the model as NaN.
    nan_z, big_z = z.tolist(), np.zeros((MAX_BATCH + 1, z_dim)).tolist()
    nan_z[2][5] = float("nan")
    for inputs, said, *code in (
        ({"z": z[:, 1:].tolist(), "label": labels}, f"Shape of input (4, {z_dim - 1}) does not match expected shape (-1, {z_dim})"),
        ({"z": z.tolist()}, "Model is missing inputs ['label']"),
        ({"z": z.tolist(), "label": [3, 7, 0, 10]}, "input 'label' holds 0..10; this generator knows 0..9"),
        ({"z": z.tolist(), "label": [3, 7, 0]}, "input 'label' must be integers of shape (4,), got int64 (3,)"),
        ({"z": nan_z, "label": labels}, "input 'z' holds 1 non-finite values (NaN or inf; the first in row 2); expected finite numbers"),
        ({"z": [[None] * z_dim], "label": [0]}, f"input 'z' holds {z_dim} non-finite values"),
        ({"z": [[1e39] * z_dim], "label": [0]}, f"input 'z' holds {z_dim} non-finite values"),  # beyond float32: inf
        ({"z": big_z, "label": [0] * (MAX_BATCH + 1)}, f"input 'z' has {MAX_BATCH + 1} rows; expected at most {MAX_BATCH} per request"),
        ({"z": [["a"] * z_dim], "label": [0]}, "Invalid input. could not convert string to float: 'a'", "BAD_REQUEST"),
        ({"z": z.tolist(), "label": ["a", "b", "c", "d"]}, "invalid literal for int()", "BAD_REQUEST"),
        ({"z": [], "label": []}, f"Shape of input (0,) does not match expected shape (-1, {z_dim})"),  # JSON has no (0, z_dim)
    ):
        refused(scoring_url, inputs, said, *code)
    status, answer = post(f"{scoring_url}/invocations", {"inputs": {"z": z.tolist(), "label": labels}})  # still answering
    assert status == 200 and np.allclose(answer["predictions"], images, atol=1e-6), status


@pytest.mark.integration
def test_the_served_infogan_champion_refuses_bad_codes_and_drops_a_label(client: mlflow.MlflowClient, tmp_path: Path, one_thread: None) -> None:
    with served(tmp_path, info_categorical=3, info_continuous=2) as url:
        z_dim = mlflow.models.get_model_info(CHAMPION).signature.inputs.input_dict()["z"].shape[1]
        good = {"z": np.zeros((2, z_dim)).tolist(), "code": [0, 2], "code_continuous": [[0.5, -0.5], [0.0, 1.0]]}
        for changes, said in (
            ({"code": [0, 3]}, "input 'code' holds 0..3; this generator knows 0..2"),
            ({"code": [-1, 0]}, "input 'code' holds -1..0; this generator knows 0..2"),
            ({"code": [0, 1, 2]}, "input 'code' must be integers of shape (2,), got int64 (3,)"),
            ({"code_continuous": [[0.5, -0.5], [None, 1.0]]}, "input 'code_continuous' holds 1 non-finite values"),
            ({"code_continuous": [[0.5], [0.0]]}, "Shape of input (2, 1) does not match expected shape (-1, 2)"),
        ):
            refused(url, good | changes, said)

        # MLflow hands the model only the inputs its signature names: a `label` (which this model takes none of) is dropped
        # with a warning in the server's log and the request answered as if it were not there. Every TensorSpec is required
        # (MLflow 3.17), so a signature cannot name an optional `label` that would let the model refuse it.
        status, answer = post(f"{url}/invocations", {"inputs": good})
        assert status == 200, answer
        status, with_label = post(f"{url}/invocations", {"inputs": good | {"label": [1, 1]}})
        assert status == 200 and with_label == answer
    assert "Found extra inputs in the model input that are not defined in the model signature: `['label']`" in (tmp_path / "serve.log").read_text()
