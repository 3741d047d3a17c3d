"""Scheduled retraining as data arrives, end to end against a real `prefect server`: conf/retrain.yaml served on a cron
schedule by `gan-pipeline schedule`, its runs started through the API as the scheduler starts them.

1. On the first part of a source folder, with no champion yet: a cold start, registered as v1 and made champion.
2. Files are added to the folder: a new data version whose parent is the first, a warm start from the champion (measured
   first at step 0), the champion measured again on the new data and the gate deciding head to head; the report says
   what changed in the data; `gan-pipeline models` shows both versions, their data and the parent link.
3. Nothing changed: every stage comes from cache and nothing new is registered.

Made tiny (8x8 digit files, an MLP, two epochs, a warm start of one): what a run computes is not what this test is
about. About two and a half minutes on 2 cores; the servers it starts are stopped at the end.
"""

import json
import os
import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mlflow
import numpy as np
import pytest

from gan.data.manifest import read_manifest
from tests.registry_store import digit_files
from tests.services import BIN, free_port, start, stop, stop_group, wait_healthy
from tests.test_schedule import api, wait_for_deployment, wait_until_ended

ROOT = Path(__file__).resolve().parents[1]
RETRAIN = str(ROOT / "conf" / "retrain.yaml")
NAME, MODEL = "retrain", "retrain-gan"
TINY = [
    "model.arch=mlp", "model.conditional=false", "model.spectral_norm=false", "model.g_hidden=[64]", "model.d_hidden=[64]",
    "train.epochs=2", "train.max_minutes=0", "train.batch_size=32", "train.checkpoint_every_epochs=1", "train.fid_every_epochs=1",
    "train.fid_samples=200", "train.sample_every_steps=10", "eval.num_samples=200", "eval.fid_draws=0", "eval.classifier_epochs=2",
    "eval.classifier_augment=false", "eval.collapse_ratio=0", f"registry.model_name={MODEL}", "registry.experiment=retrain",
]

pytestmark = pytest.mark.integration


def row(table: str, version: int) -> str:
    return next(line for line in table.splitlines() if line.startswith(f"│ v{version} "))


def test_scheduled_retraining_warm_starts_from_the_champion_and_decides_head_to_head(tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "RAY_AUTH_MODE": "disabled"}
    for key in ("RAY_ADDRESS", "GAN_PIPELINE_FAIL_AT", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        env.pop(key, None)
    source, order = tmp_path / "source", np.random.default_rng(0).permutation(1797)
    digit_files(source, order[:1078])
    settings = [arg for item in [f"data.source={source}", *TINY] for arg in ("--set", item)]
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    server = start([BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"],
                   tmp_path / "prefect.log", {**env, "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true"})
    serve = None
    due = (datetime.now(timezone.utc) + timedelta(hours=12)).replace(second=0, microsecond=0)  # booked, never due in the test
    env = {**env, "PREFECT_API_URL": url}

    def scheduled_run(deployment: dict) -> dict:
        """One run of the deployment, as the scheduler would start it; its summary."""
        run_id = api(url, f"/deployments/{deployment['id']}/create_flow_run", {})["id"]
        ended = wait_until_ended(url, [run_id])[run_id]
        assert ended["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-4000:]
        return json.loads((tmp_path / "gan-work" / "runs" / f"{run_id}.json").read_text())

    try:
        wait_healthy(f"{url}/health", server)
        serve = start([BIN / "gan-pipeline", "schedule", "--cron", f"{due.minute} {due.hour} * * *", "--name", NAME, "-c", RETRAIN, *settings],
                      tmp_path / "serve.log", {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}, new_session=True, cwd=tmp_path)
        deployment = wait_for_deployment(url, serve, name=NAME)
        assert deployment["parameters"]["config"]["train"]["init_from"] == "@champion"

        first = scheduled_run(deployment)
        digit_files(source, order[1078:])  # new images arrive
        second = scheduled_run(deployment)
        table = subprocess.run([BIN / "gan-pipeline", "models", MODEL, "-c", RETRAIN, *settings], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
        chain = subprocess.run([BIN / "gan-pipeline", "models", MODEL, "--version", "2", "-c", RETRAIN, *settings], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=300)
        third = scheduled_run(deployment)
    finally:
        if serve is not None:
            stop_group(serve)  # before the server: serve pauses the schedule on its way out
        stop(server)

    # 1. No champion yet: a cold start, champion.
    assert [s["status"] for s in first["stages"].values()] == ["ran"] * 5 and first["warm_start"] is None
    assert (str(first["registered"]["version"]), first["registered"]["reason"]) == ("1", "no champion yet")

    # 2. A new data version, warm-started from the champion and measured head to head on the new data.
    before, after = (read_manifest(Path(run["dataset"])) for run in (first, second))
    assert after["parent"]["fingerprint"] == before["fingerprint"] and after["rows"]["train"] > before["rows"]["train"]
    assert list(second["stages"]) == ["ingest", "warm-start", "train", "evaluate", "register"]
    assert [s["status"] for s in second["stages"].values()] == ["ran"] * 5
    assert second["warm_start"]["version"] == f"{MODEL}/1" and second["warm_start"]["source"] == f"models:/{MODEL}@champion"
    registered = second["registered"]
    assert str(registered["version"]) == "2"
    assert f"head to head on v2's data {after['fingerprint'][:12]} (v1 was trained on {before['fingerprint'][:12]})" in registered["reason"]
    assert re.search(r": (lower by .*, better beyond the noise|lower by .*, but within the noise \(± [\d.]+\)|not better)$", registered["reason"])
    report = json.loads(Path(second["report"]).read_text())
    assert report["data_change"]["files"] == {"added": 719, "changed": 0, "removed": 0}
    assert report["quick_fid"][0]["step"] == 0 and report["step"] == after["rows"]["train"] // 32  # one epoch: a third of two, rounded up
    assert (Path(second["report"]).parent / "data_change.png").is_file()

    # Both versions, their data versions and the parent link; the lineage names the parent and the data change.
    assert table.returncode == 0, table.stderr[-2000:]
    assert re.search(rf"│ {after['fingerprint'][:12]} +│ v1 +│", row(table.stdout, 2)), table.stdout
    assert re.search(rf"│ {before['fingerprint'][:12]} +│ — +│", row(table.stdout, 1)), table.stdout
    assert chain.returncode == 0, chain.stderr[-2000:]
    assert f"✓ named by models:/{MODEL}@champion, from step" in chain.stdout
    assert f"✓ data changed since {before['fingerprint'][:12]}: 719 file(s) added, 0 changed, 0 removed" in chain.stdout

    # 3. Nothing new: every stage from cache, nothing registered.
    assert {k: v["status"] for k, v in third["stages"].items()} == {
        "ingest": "cached", "warm-start": "ran", "train": "cached", "evaluate": "cached", "register": "ran"}
    assert str(third["registered"]["version"]) == "2" and third["registered"]["reason"].startswith("already registered as v2")
    uri = f"sqlite:///{tmp_path / 'gan-work' / 'mlflow.db'}"
    assert len(mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name = '{MODEL}'")) == 2
