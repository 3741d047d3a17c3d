"""The terminal without --verbose: the pipeline's own lines from Ray's processes reach the task's log, everything
Ray forwards reaches the run's log file, and nothing else reaches the user; with --verbose, Ray's printer gets the rest."""

import logging
from pathlib import Path

import pytest

from pipelines import console

EPOCH_LINE = "[train] epoch 3/58 step 186 loss_d 0.612 d_real 0.701 d_fake 0.290 loss_g 1.210 412 img/s"
NOISE = "Actor with class name: 'PreemptionWatcher' has constructor arguments in the object store"


@pytest.fixture
def settings(tmp_path: Path):  # noqa: ANN201
    saved, level = (console.SETTINGS.verbose, console.SETTINGS.log_file), logging.getLogger("ray").level
    yield tmp_path / "logs" / "run.log"
    console.SETTINGS.verbose, console.SETTINGS.log_file = saved
    logging.getLogger("ray").setLevel(level)


@pytest.mark.parametrize("verbose", [False, True])
def test_ray_output_is_routed(settings: Path, caplog: pytest.LogCaptureFixture, verbose: bool) -> None:
    console.configure(verbose, settings)
    printed = []
    with console.training(58, logging.getLogger("train-task")), caplog.at_level(logging.INFO, "train-task"):
        console.forward({"lines": [NOISE, EPOCH_LINE], "pid": 42, "actor_name": "RayTrainWorker", "is_err": False},
                        lambda data, ignore_prefix: printed.extend(data["lines"]))
    assert [r.getMessage() for r in caplog.records] == [EPOCH_LINE]  # one line per epoch in the task's log
    assert printed == ([NOISE] if verbose else [])
    assert settings.read_text() == f"(RayTrainWorker pid=42) {NOISE}\n(RayTrainWorker pid=42) {EPOCH_LINE}\n"
    assert console.record_failure("WorkerGroupError: rank 1 died\nTraceback ...") == settings
    assert "[error] WorkerGroupError: rank 1 died\nTraceback ..." in settings.read_text()


def test_library_loggers_and_mlflow_notices_go_to_the_log_file(settings: Path, capsys: pytest.CaptureFixture) -> None:
    from mlflow.utils import logging_utils

    console.configure(False, settings)
    data_logger, handler = logging.getLogger("ray.test-console"), logging.StreamHandler()  # writes to stderr, as Ray's do
    data_logger.addHandler(handler)
    data_logger.propagate = False  # as Ray Data's: its own handler only (whatever earlier tests left on Ray's loggers)
    write = logging_utils.MLFLOW_LOGGING_STREAM.write
    try:
        console.into_log_file("ray")
        data_logger.warning("Estimated parquet encoding ratio is 3.256.")
        console.attach_mlflow()
        logging_utils.eprint("Successfully registered model 'smoke-gan'.")
    finally:
        data_logger.removeHandler(handler)
        logging_utils.MLFLOW_LOGGING_STREAM.write = write
    assert capsys.readouterr().err == ""
    assert settings.read_text() == "Estimated parquet encoding ratio is 3.256.\nSuccessfully registered model 'smoke-gan'.\n"


def test_a_line_ray_repeats_every_second_is_logged_once_per_hundred(settings: Path) -> None:
    console.configure(False, settings)
    line = "Failed to query Ray Train Controller actor state. State API may be temporarily unavailable. Continuing to monitor."
    console._repeats.clear()
    for _ in range(250):
        console.forward({"lines": [line, "other"], "pid": 7, "actor_name": "PlacementGroupCleaner"}, print)
    logged = settings.read_text().splitlines()
    assert logged.count("(PlacementGroupCleaner pid=7) other") == 250
    assert [x for x in logged if "Failed" in x] == [f"(PlacementGroupCleaner pid=7) {line}" + n for n in ("", " (100 times so far)", " (200 times so far)")]
