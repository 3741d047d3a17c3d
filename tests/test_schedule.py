"""`gan-pipeline schedule`: bad input refused in one line before anything is served (a few seconds, no server); and,
against a real `prefect server start`, the served deployment carries the schedule, the config and a limit of one run at
a time, the server's scheduler books its next run, and of two runs triggered back to back through the API the second
waits (AwaitingConcurrencySlot) until the first has ended, then completes (integration: about a minute on 2 cores;
the first run trains conf/smoke.yaml made tiny (8x8 digits, one epoch), the second takes ingest, train and evaluate
from cache)."""

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.services import BIN, free_port, start, stop, stop_group, wait_healthy
from tests.test_pipeline import TINY

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "conf" / "smoke.yaml")
NAME = "test-schedule"


def api(url: str, path: str, body: dict | None = None, tries: int = 10) -> dict | list:
    """One call of the Prefect REST API: GET without a body, POST with one. A 503 (the server's answer to a retryable
    database error, such as SQLite busy with a concurrent write) is retried, as Prefect's own client does."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    for _ in range(tries - 1):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as err:
            if err.code != 503:
                raise
            time.sleep(1)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def wait_for_deployment(url: str, serve, seconds: float = 180, name: str = NAME) -> dict:  # noqa: ANN001 - the serving process
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert serve.poll() is None, f"gan-pipeline schedule exited with {serve.returncode}"
        try:
            return api(url, f"/deployments/name/gan-pipeline/{name}")
        except urllib.error.HTTPError as err:
            assert err.code == 404, err
        time.sleep(1)
    raise TimeoutError(f"deployment gan-pipeline/{name} not registered after {seconds} s")


def wait_until_ended(url: str, run_ids: list[str], seconds: float = 600) -> dict[str, dict]:
    """Poll both runs until each is in a final state; no two of them may ever be seen running at once."""
    deadline = time.time() + seconds
    while True:
        runs = {i: api(url, f"/flow_runs/{i}") for i in run_ids}
        assert sum(r["state"]["type"] == "RUNNING" for r in runs.values()) <= 1, runs
        if all(r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs.values()):
            return runs
        assert time.time() < deadline, {i: r["state"]["name"] for i, r in runs.items()}
        time.sleep(1)


def test_bad_input_is_refused_in_one_line_before_serving(tmp_path: Path, cli: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.chdir(tmp_path)
    cases = [
        (["--cron", "0 2 * *"], None, 'error: schedule: Invalid cron string: "0 2 * *" (five fields: minute hour'),
        (["--cron", "0 2 * * *", "--timezone", "Mars"], None, 'error: schedule: Invalid timezone: "Mars"'),
        (["--cron", "0 2 * * *", "--name", "a/b"], None, "error: schedule --name 'a/b': use letters"),
        (["--cron", "0 2 * * *"], None, "error: schedule needs a Prefect server, and PREFECT_API_URL is not set"),
        (["--cron", "0 2 * * *"], f"http://127.0.0.1:{free_port()}/api", "error: schedule: the Prefect API at http://127.0.0.1:"),
    ]
    for args, api_url, message in cases:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            code, out, err = cli("schedule", *args)
        assert code == 2 and err.startswith(message) and err.count("\n") == 1 and "Traceback" not in out + err, (args, out, err)
    assert not (tmp_path / "gan-work").exists()

    # --dry-run needs no server: the config the runs get, its workdir made absolute.
    code, out, _ = cli("schedule", "--cron", "0 2 * * *", "-c", SMOKE, "--dry-run")
    assert code == 0 and f"workdir: {tmp_path.resolve() / 'gan-work'}" in out


@pytest.mark.integration
def test_served_deployment_runs_one_at_a_time_and_the_next_waits(tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "RAY_AUTH_MODE": "disabled"}
    for key in ("RAY_ADDRESS", "GAN_PIPELINE_FAIL_AT", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        env.pop(key, None)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    # A run refused a slot retries after 1 s instead of 30, so the second run starts soon after the first ends.
    server = start([BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"],
                   tmp_path / "prefect.log", {**env, "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
                           "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true"})
    serve = None
    # Daily, 12 hours from now: the schedule is booked but never fires during the test.
    due = (datetime.now(timezone.utc) + timedelta(hours=12)).replace(second=0, microsecond=0)
    cron = f"{due.minute} {due.hour} * * *"
    try:
        wait_healthy(f"{url}/health", server)
        # The runner looks for due runs every 2 s instead of 10.
        tiny = [arg for item in TINY for arg in ("--set", item)]  # what a run computes is not what this test is about
        serve = start([BIN / "gan-pipeline", "schedule", "--cron", cron, "--name", NAME, "-c", SMOKE, *tiny], tmp_path / "serve.log",
                      {**env, "PREFECT_API_URL": url, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}, new_session=True, cwd=tmp_path)
        deployment = wait_for_deployment(url, serve)

        # What was served: the schedule, the resolved config (its workdir made absolute), one run at a time, ENQUEUE.
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"], s["active"]) for s in deployment["schedules"]] == [(cron, "UTC", True)]
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        assert deployment["parameters"]["config"]["runtime"]["workdir"] == str((tmp_path / "gan-work").resolve())
        assert deployment["entrypoint"] == "pipelines.flow.gan_pipeline"

        # Two runs back to back, as a run started by hand while the scheduled one runs would be.
        run_ids = [api(url, f"/deployments/{deployment['id']}/create_flow_run", {})["id"] for _ in range(2)]
        runs = wait_until_ended(url, run_ids)
        assert [r["state"]["type"] for r in runs.values()] == ["COMPLETED", "COMPLETED"], (tmp_path / "serve.log").read_text()[-3000:]
        first, second = sorted(runs.values(), key=lambda r: when(r["start_time"]))
        waits = [when(s["timestamp"]) for s in api(url, f"/flow_run_states/?flow_run_id={second['id']}")
                 if s["name"] == "AwaitingConcurrencySlot"]

        # The scheduler booked the next run at the cron's time.
        booked = api(url, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}},
                                                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
        assert due in {when(r["expected_start_time"]) for r in booked}, [r["expected_start_time"] for r in booked]
    finally:
        if serve is not None:
            stop_group(serve)  # before the server: serve pauses the schedule on its way out
        stop(server)

    # The second was refused a slot while the first held it, and started only after the first had ended.
    assert waits and waits[0] < when(first["end_time"]), (waits, first["end_time"])
    assert when(second["start_time"]) >= when(first["end_time"])
    assert f"next run {due:%Y-%m-%d %H:%M} UTC" in (tmp_path / "serve.log").read_text()
