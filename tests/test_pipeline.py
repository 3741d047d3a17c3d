"""End to end with the real Ray (2 CPU workers), Prefect (ephemeral server) and MLflow (SQLite), on conf/smoke.yaml.

One working folder for the module, four runs of the CLI:
1. with injected failures: rank 0 crashes after epoch 1's checkpoint (the Prefect retry must resume
   from it) and evaluation always fails, so the flow fails;
2. a plain re-run: ingest and train come from cache, evaluate and register run;
3. another re-run: everything cached, and no second model version;
4. after deleting the evaluation's folder: the stale cache entry is noticed and evaluation redone.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "conf" / "smoke.yaml")
CLI = str(Path(sys.executable).with_name("gan-pipeline"))
# Every stage real, at the least cost (on top of SMOKE): 8x8 digits, one epoch of a narrow MLP GAN, 200 samples, a
# one-epoch classifier. For tests of what runs around the stages (faults, schedules), not of what they compute.
TINY = [
    "data.source=bundled-digits", "train.epochs=1", "train.batch_size=32", "model.g_hidden=[64]", "model.d_hidden=[64]",
    "train.sample_every_steps=10", "eval.num_samples=200", "eval.fid_draws=0", "eval.classifier_augment=false",
]

pytestmark = pytest.mark.integration


def cli_env(workdir: Path, env: dict | None = None) -> dict:
    """The CLI's environment for a run in `workdir`: its own Prefect home and the workspace's own MLflow store (MLflow's
    set_tracking_uri exports MLFLOW_TRACKING_URI, so this process's environment may name another test's), no test hook
    unless `env` sets one."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("GAN_PIPELINE_FAIL_AT", "MLFLOW_TRACKING_URI")}
    return {**full_env, "PREFECT_HOME": str(workdir / ".prefect-home"), **(env or {})}


def cli(workdir: Path, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process, in the shared working folder (`cli_env`)."""
    done = subprocess.run([CLI, *args], cwd=workdir, env=cli_env(workdir, env), capture_output=True, text=True, timeout=timeout)
    (workdir / "cli.log").open("a").write(f"$ gan-pipeline {' '.join(args)}\n{done.stdout}\n{done.stderr}\n")
    return done


def summaries(workdir: Path) -> list[dict]:
    runs = sorted((workdir / "gan-work" / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return [json.loads(p.read_text()) for p in runs]


def registry(workdir: Path):  # noqa: ANN201
    import mlflow

    uri = f"sqlite:///{workdir / 'gan-work' / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)  # not set_tracking_uri: it exports the URI


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("pipeline")
    failed = cli(workdir, "run", "-c", SMOKE, env={"GAN_PIPELINE_FAIL_AT": "train:1,evaluate"})
    second = cli(workdir, "run", "-c", SMOKE)
    assert second.returncode == 0, second.stderr[-3000:]
    after_second = summaries(workdir)
    third = cli(workdir, "run", "-c", SMOKE)
    assert third.returncode == 0, third.stderr[-3000:]
    after_third = summaries(workdir)
    shutil.rmtree(Path(after_third[-1]["report"]).parent)  # a cached result whose files are gone
    fourth = cli(workdir, "run", "-c", SMOKE)
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    return {"workdir": workdir, "failed": failed, "second": after_second[-1], "third": after_third[-1], "fourth": summaries(workdir)[-1],
            "second_output": second.stdout + second.stderr}


def test_the_terminal_shows_the_pipeline_and_the_log_file_the_libraries(runs: dict) -> None:
    """The first registration: MLflow creates its tables and says it registered; none of it on the terminal (which here is
    no terminal), all of it in the run's log file."""
    chatter = ("Successfully registered model", "Creating initial MLflow database tables")
    assert not [line for line in runs["second_output"].splitlines() if any(c in line for c in (*chatter, "tqdm", "parquet"))]
    logs = "".join(path.read_text() for path in (runs["workdir"] / "gan-work" / "logs").glob("*-gan-pipeline-*.log"))
    assert all(c in logs for c in chatter)


def test_injected_failures_fail_the_flow_and_training_resumed_from_its_checkpoint(runs: dict) -> None:
    failed = runs["failed"]
    out = failed.stdout + failed.stderr
    assert failed.returncode == 1
    assert "error: the pipeline failed: InjectedFailure: evaluate" in failed.stderr
    assert "crash injected after the checkpoint of epoch 1" in out
    assert "[train] resumed from epoch 1, step 31" in out  # the retry continued, it did not start over


def test_rerun_after_evaluate_failure_redoes_nothing_before_it(runs: dict) -> None:
    stages = runs["second"]["stages"]
    assert {k: v["status"] for k, v in stages.items()} == {"ingest": "cached", "train": "cached", "evaluate": "ran", "register": "ran"}
    # The final checkpoint still records that training resumed at epoch 1 in the failed run.
    assert runs["second"]["train"]["metrics"]["resumed_from_epoch"] == 1


def test_parquet_dataset_matches_its_manifest(runs: dict) -> None:
    dataset = Path(runs["second"]["dataset"])
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["rows"] == {"train": 4000, "heldout": 1000}
    assert pq.read_table(dataset / "train").num_rows == 4000
    assert pq.read_table(dataset / "heldout").num_rows == 1000
    assert set(manifest["class_counts"]["train"].values()) == {400}
    assert not list(dataset.parent.glob(".tmp-*"))


def test_both_workers_trained_and_metrics_are_finite(runs: dict) -> None:
    metrics = runs["second"]["train"]["metrics"]
    assert metrics["images_rank0"] > 0 and metrics["images_rank1"] > 0
    assert metrics["step"] == 62  # 2 epochs x 31 batches of 64 from each 2000-image shard
    report = json.loads(Path(runs["second"]["report"]).read_text())
    for scores in (report["model"], report["real_vs_real"]):
        assert all(math.isfinite(v) for k, v in scores.items() if k != "class_histogram")
    assert report["real_vs_real"]["fid"] < report["model"]["fid"]  # 62 steps of an MLP GAN are not yet real digits
    assert 0.5 < report["classifier_test_accuracy"] <= 1.0
    pictures = {p.name for p in Path(runs["second"]["report"]).parent.glob("*.png")}
    assert {"samples.png", "real.png", "samples_by_class.png", "class_histograms.png", "nearest_train.png", "curves.png"} <= pictures


def test_version_registered_with_aliases_and_lineage(runs: dict) -> None:
    client = registry(runs["workdir"])
    registered = runs["second"]["registered"]
    champion = client.get_model_version_by_alias("smoke-gan", "champion")
    challenger = client.get_model_version_by_alias("smoke-gan", "challenger")
    assert champion.version == challenger.version == registered["version"]
    manifest = json.loads((Path(runs["second"]["dataset"]) / "manifest.json").read_text())
    assert champion.tags["dataset_fingerprint"] == manifest["fingerprint"]
    assert champion.tags["prefect_flow_run_id"] == runs["second"]["flow_run_id"]
    assert {"config_hash", "code_version", "fid"} <= champion.tags.keys()
    run = client.get_run(registered["run_id"])
    assert run.data.params["model.arch"] == "mlp" and "eval_fid" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "loss_d")) >= 10  # per-step curve
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"samples", "evaluation", "config"} <= artifacts


def test_full_rerun_is_cached_and_registers_nothing_new(runs: dict) -> None:
    stages = runs["third"]["stages"]
    assert [stages[s]["status"] for s in ("ingest", "train", "evaluate")] == ["cached"] * 3
    assert runs["third"]["registered"]["version"] == runs["second"]["registered"]["version"]
    assert len(registry(runs["workdir"]).search_model_versions("name = 'smoke-gan'")) == 1


def test_a_cached_result_whose_files_are_gone_is_recomputed(runs: dict) -> None:
    stages = runs["fourth"]["stages"]
    assert [stages[s]["status"] for s in ("ingest", "train", "evaluate")] == ["cached", "cached", "ran"]
    assert Path(runs["fourth"]["report"]).is_file()
    assert runs["fourth"]["registered"]["version"] == runs["second"]["registered"]["version"]


def test_champion_loads_in_a_fresh_process_and_generates_images(runs: dict) -> None:
    workdir = runs["workdir"]
    done = cli(workdir, "sample", "--model", "models:/smoke-gan@champion", "-n", "16", "--out", "grid.png", "-c", SMOKE)
    assert done.returncode == 0, done.stderr[-2000:]
    from PIL import Image

    assert Image.open(workdir / "grid.png").size == ((8 * 30 + 2) * 2, (2 * 30 + 2) * 2)  # 8x2 tiles of 28 px
    probe = (
        "import mlflow, numpy as np; "
        f"mlflow.set_tracking_uri('sqlite:///{workdir / 'gan-work' / 'mlflow.db'}'); "
        "m = mlflow.pyfunc.load_model('models:/smoke-gan@champion'); "
        "x = m.predict(np.random.default_rng(0).standard_normal((5, 100)).astype(np.float32)); "
        "print(x.shape, x.dtype, float(x.min()) >= 0, float(x.max()) <= 1)"
    )
    shape = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=workdir)
    assert shape.stdout.strip().splitlines()[-1] == "(5, 1, 28, 28) float32 True True", shape.stderr[-2000:]


def test_bad_input_fails_clearly_and_changes_nothing(runs: dict, tmp_path: Path) -> None:
    workdir = runs["workdir"]
    before = [(v.version, v.run_id) for v in registry(workdir).search_model_versions("name = 'smoke-gan'")]
    corrupt = tmp_path / "idx"
    corrupt.mkdir()
    (corrupt / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 10)
    (corrupt / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    cases = [
        (["--set", f"data.source={corrupt}"], "train-images-idx3-ubyte: truncated IDX header"),
        (["--set", f"data.source={tmp_path / 'missing'}"], "is neither a bundled data set"),
        (["--set", "train.batch_size=0"], "train.batch_size = 0 (--set): Input should be greater than or equal to 2"),
        (["--set", "train.batch_size=4096"], "each of 2 workers holds only 2000 training images"),
    ]
    for extra, message in cases:
        done = cli(workdir, "run", "-c", SMOKE, *extra, timeout=120)
        assert done.returncode == 2, (extra, done.stderr[-2000:])
        assert message in done.stderr and "Traceback" not in done.stderr + done.stdout
    after = [(v.version, v.run_id) for v in registry(workdir).search_model_versions("name = 'smoke-gan'")]
    assert after == before
    assert registry(workdir).get_model_version_by_alias("smoke-gan", "champion").version == runs["second"]["registered"]["version"]


def test_stage_commands_chain_by_path_and_reuse_the_flow_cache(runs: dict) -> None:
    """`ingest | train | evaluate | register` run the flow's own tasks: same cache keys, same outputs."""
    workdir, second = runs["workdir"], runs["second"]

    def stage(*args: str) -> str:
        done = cli(workdir, *args, "-c", SMOKE)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip().splitlines()[-1]

    dataset = stage("ingest")
    assert dataset == second["dataset"]
    checkpoint = stage("train", "--dataset", dataset)
    assert checkpoint == second["train"]["checkpoint"]
    report = stage("evaluate", "--dataset", dataset, "--checkpoint", checkpoint)
    assert report == second["report"]
    registered = json.loads(stage("register", "--dataset", dataset, "--checkpoint", checkpoint, "--report", report))
    assert registered["version"] == second["registered"]["version"]


def test_a_nan_mid_training_is_rolled_back_on_both_ranks_and_the_model_carries_the_record(runs: dict) -> None:
    """The watchdog's test hook turns D's weights NaN at step 40 (epoch 2 of 31 steps per worker): both DDP ranks
    roll back to epoch 1 with halved learning rates and the run finishes; the registry refuses the drill's model, and,
    told to take it (the same run, from the cache), registers it marked as a drill, the rollback on its MLflow run."""
    workdir = runs["workdir"]
    refused = cli(workdir, "run", "-c", SMOKE, "--set", "train.seed=7", env={"GAN_INJECT_NAN_AT_STEP": "40"})
    assert refused.returncode == 3 and "not registered: a drill trained it (GAN_INJECT_NAN_AT_STEP=40)" in refused.stderr, refused.stderr[-3000:]
    assert "[watchdog] step 62: loss_d = nan; back to epoch 1, learning rates x0.5" in refused.stdout + refused.stderr
    done = cli(workdir, "run", "-c", SMOKE, "--set", "train.seed=7", env={"GAN_INJECT_NAN_AT_STEP": "40", "GAN_PIPELINE_REGISTER_DRILLS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    version = summaries(workdir)[-1]["registered"]
    assert json.loads(registry(workdir).get_model_version(version["model_name"], version["version"]).tags["drill"]) == {"GAN_INJECT_NAN_AT_STEP": 40}
    run = registry(workdir).get_run(version["run_id"])
    assert run.data.tags["watchdog.rollback"] == "1" and run.data.metrics["watchdog_rollbacks"] == 1.0
    assert math.isfinite(float(run.data.metrics["eval_fid"]))


def test_a_collapsed_run_is_evaluated_but_never_registered(runs: dict) -> None:
    """With a collapse threshold no sample set meets, the watchdog marks the run collapsed: register refuses
    with the reason, the CLI exits non-zero without a traceback, the registry is unchanged. (Another seed: the watchdog's
    settings only observe a run, so with the same weights settings the finished run would be resumed, not trained.)"""
    workdir = runs["workdir"]
    before = [(v.version, v.run_id) for v in registry(workdir).search_model_versions("name = 'smoke-gan'")]
    reports = set((workdir / "gan-work" / "evaluations").rglob("report.json"))
    done = cli(workdir, "run", "-c", SMOKE, "--set", "train.collapse_ratio=0.99", "--set", "train.collapse_min_steps=0", "--set", "train.seed=5")
    assert done.returncode == 3
    assert "not registered: the samples collapsed (epoch 2: sample diversity" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    assert [(v.version, v.run_id) for v in registry(workdir).search_model_versions("name = 'smoke-gan'")] == before
    assert len(set((workdir / "gan-work" / "evaluations").rglob("report.json")) - reports) == 1  # evaluated all the same
