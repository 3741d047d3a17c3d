"""Champion / challenger promotion against a real MLflow registry (SQLite, or a separately started server): the gate,
promote / rollback by hand, and a registered version found again for evaluation."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from gan.data.manifest import read_manifest
from pipelines.cli.main import main
from pipelines.config import PipelineConfig
from pipelines.errors import InvalidScores, UsageError
from pipelines.faults import InjectedFailure
from pipelines.registry import promotion
from pipelines.registry.champion import move_champion, promote, rollback
from pipelines.registry.lineage import evaluation_inputs
from pipelines.stages.ingest import ingest
from pipelines.stages import register as register_stage
from pipelines.stages.register import _promote, register
from tests import services
from tests.registry_store import checkpoints, config, evaluation, registered

ROOT = Path(__file__).resolve().parents[1]
MAX_MEMORISED = 0.2


def new_version(client: mlflow.MlflowClient, *args: object, **kwargs: object) -> tuple:
    report = evaluation(*args, **kwargs)
    version = client.create_model_version("m", source="file:///nowhere", tags=promotion.Standing.of_report("", report).tags())
    return version, report


def aliases(client: mlflow.MlflowClient) -> dict[str, str]:
    return {alias: str(client.get_model_version_by_alias("m", alias).version) for alias in ("champion", "challenger")}


def gate(client: mlflow.MlflowClient, *args: object, **kwargs: object) -> tuple[bool, str]:
    """The gate on a version with these scores (and no yardstick kept: the champion cannot be measured again)."""
    cfg = PipelineConfig.model_validate({"registry": {"max_memorised_share": MAX_MEMORISED}})
    return _promote(client, cfg, "m", *new_version(client, *args, **kwargs), bundle=Path("no-yardstick.pt"))


def test_champion_moves_only_beyond_the_noise_on_the_same_yardstick(client: mlflow.MlflowClient) -> None:
    assert gate(client, 50.0) == (True, "no champion yet")
    assert aliases(client) == {"champion": "1", "challenger": "1"}

    promoted, why = gate(client, 60.0)  # worse
    assert not promoted and why.endswith("not better") and aliases(client) == {"champion": "1", "challenger": "2"}

    promoted, why = gate(client, 49.8, std=0.2)  # lower, but within the noise: 0.2 < 1.96 x (0.2² + 0.1²)^½ = 0.44
    assert not promoted and "within the noise" in why and aliases(client)["champion"] == "1"

    promoted, why = gate(client, 40.0)
    assert promoted and why == "FID 40.00 ± 0.20 against champion v1's 50.00 ± 0.20: lower by 10.00 ± 0.28, better beyond the noise"
    assert aliases(client) == {"champion": "4", "challenger": "4"}
    assert client.get_model_version("m", "4").tags["promotion"] == why

    for kwargs in ({"extractor": "clf-b"}, {"n": 500}):  # another yardstick: never compared
        promoted, why = gate(client, 1.0, **kwargs)
        assert not promoted and "not comparable" in why and aliases(client)["champion"] == "4"

    promoted, why = gate(client, 1.0, memorised=0.5)  # far better, but it copies its training images
    assert not promoted and "hands back training images: 50.0%" in why and aliases(client)["champion"] == "4"


def test_the_gate_reads_the_interval_of_the_difference_not_the_overlap_of_the_two() -> None:
    """The retraining benchmark's warm start against its champion (RESULTS.md): the two 95 % intervals, 2.84 ± 0.85 and
    4.45 ± 0.95, overlap, yet the difference, 1.61 ± 1.27, is beyond the noise; twice the spread is not."""
    champion = promotion.Standing("1", 4.45, 0.485, "clf", 1000, 0.01, "y", "d")
    promoted, why = promotion.decide(promotion.Standing("2", 2.84, 0.43, "clf", 1000, 0.01, "y", "d"), champion, "1", MAX_MEMORISED)
    assert promoted and why == "FID 2.84 ± 0.84 against champion v1's 4.45 ± 0.95: lower by 1.61 ± 1.27, better beyond the noise"
    promoted, why = promotion.decide(promotion.Standing("2", 2.84, 0.86, "clf", 1000, 0.01, "y", "d"), champion, "1", MAX_MEMORISED)
    assert not promoted and why.endswith("lower by 1.61, but within the noise (± 1.94)")


@pytest.mark.parametrize(("scores", "said"), [
    ({"fid": float("nan")}, "fid = nan"), ({"fid": 40.0, "std": -0.1}, "fid_std = -0.1"), ({"fid": 40.0, "memorised": float("nan")}, "memorised_share = nan"),
], ids=["nan-fid", "negative-std", "nan-share"])
def test_scores_the_gate_cannot_compare_stop_register_before_anything_is_registered(
    client: mlflow.MlflowClient, tmp_path: Path, scores: dict, said: str,
) -> None:
    """A user's error, one line naming the report, the number and the rule (an assert was stripped by `python -O`, and
    retried as a bug); neither a run nor a version is made."""
    report = tmp_path / "evaluation" / "report.json"
    report.parent.mkdir()
    report.write_text(json.dumps(evaluation(**scores)))  # NaN as JSON writes it
    with pytest.raises(InvalidScores, match=rf"^evaluation report {report}: {said} \(expected [^)]*\): scores the promotion gate cannot compare"):
        register(config(tmp_path), str(tmp_path / "dataset"), str(tmp_path / "checkpoint"), str(report))
    assert client.search_model_versions("name = 'm'") == [] and client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_promote_and_rollback_by_hand_leave_who_and_why(client: mlflow.MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_PIPELINE_USER", "alice")
    cfg = config(tmp_path)
    gate(client, 50.0), gate(client, 40.0), gate(client, 60.0)  # champion v1, then v2 by the gate
    assert aliases(client)["champion"] == "2"
    assert promote(cfg, "m", "3", "the samples look better") == "m: champion v3 (was v2)"
    assert client.get_model_version("m", "3").tags["promotion"] == "promoted by alice: the samples look better"
    assert rollback(cfg, "m", "FID regressed") == "m: champion v2 (was v3)"
    assert rollback(cfg, "m", "again") == "m: champion v1 (was v2)"
    history = promotion.json.loads(client.get_registered_model("m").tags[promotion.HISTORY_TAG])
    assert [(h["version"], h["previous"], h["by"]) for h in history] == [
        ("1", None, "promotion gate"), ("2", "1", "promotion gate"), ("3", "2", "alice"), ("2", "3", "alice"), ("1", "2", "alice"),
    ]
    with pytest.raises(UsageError, match="no champion before v1 on record"):
        rollback(cfg, "m", "once more")
    with pytest.raises(UsageError, match="^m: no version '9'; registered versions: v1, v2, v3; aliases: challenger = v3, champion = v1$"):
        promote(cfg, "m", "9", "typo")


def test_evaluate_model_finds_the_checkpoint_and_dataset_or_says_what_is_missing(client: mlflow.MlflowClient, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    dataset, ckpt = Path(ingest(cfg)), tmp_path / "checkpoint"
    ckpt.mkdir()
    lineage = {"checkpoint": str(ckpt), "dataset_fingerprint": read_manifest(dataset)["fingerprint"]}
    client.create_model_version("m", source="file:///nowhere", tags=lineage)
    client.set_registered_model_alias("m", "champion", "1")
    assert evaluation_inputs(cfg, "models:/m@champion") == evaluation_inputs(cfg, "models:/m/1") == (dataset, ckpt)

    other = Path(ingest(config(tmp_path, split_seed=1)))  # the same images split otherwise: other data
    with pytest.raises(UsageError, match=r"--dataset .*: holds other data than --model models:/m@champion \(v1\) was trained on"):
        evaluation_inputs(cfg, "models:/m@champion", other)
    with pytest.raises(UsageError, match="^m: no version 'best'; registered versions: v1; aliases: champion = v1$"):
        evaluation_inputs(cfg, "models:/m@best")
    with pytest.raises(UsageError, match="^no registered model 'n'; registered models: m$"):
        evaluation_inputs(cfg, "models:/n/1")
    with pytest.raises(UsageError, match="expected models:/NAME@ALIAS or models:/NAME/VERSION"):
        evaluation_inputs(cfg, "models:/m/latest")
    shutil.rmtree(dataset)  # found by its content, not by being the only one there
    with pytest.raises(UsageError, match=r"no dataset with its data \(fingerprint \w{12}\) in .*datasets; run `gan-pipeline ingest`"):
        evaluation_inputs(cfg, "models:/m@champion")
    ckpt.rmdir()
    with pytest.raises(UsageError, match=f"^--model models:/m@champion \\(v1\\): its checkpoint folder {ckpt} no longer exists"):
        evaluation_inputs(cfg, "models:/m@champion")


@pytest.mark.parametrize(("args", "said"), [
    (["--dataset", "d"], "evaluate: give exactly one of --checkpoint DIR and --model models:/NAME@ALIAS"),
    (["--checkpoint", "c", "--model", "models:/m@champion"], "evaluate: give exactly one of --checkpoint DIR and --model models:/NAME@ALIAS"),
    (["--checkpoint", "c"], "evaluate --checkpoint: --dataset DIR is required too"),
], ids=["neither", "both", "no-dataset"])
def test_evaluate_takes_a_checkpoint_and_dataset_or_a_model(args: list[str], said: str, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "argv", ["gan-pipeline", "evaluate", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2 and capsys.readouterr().err == f"error: {said}\n"


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
def test_register_keeps_the_champion_against_a_worse_or_noise_level_model(client: mlflow.MlflowClient, tmp_path: Path) -> None:
    """Through register() itself: real checkpoints (a tiny MLP GAN after each of 4 epochs), a real dataset, logged generators."""
    cfg = config(tmp_path)
    dataset = ingest(cfg)
    folders = checkpoints(tmp_path / "gan-work" / "ray_results" / "train-test", epochs=4)

    assert registered(cfg, dataset, folders[0], 50.0)["reason"] == "no champion yet"
    worse = registered(cfg, dataset, folders[1], 60.0)
    assert not worse["champion"] and worse["reason"].endswith("not better") and aliases(client) == {"champion": "1", "challenger": "2"}
    noise = registered(cfg, dataset, folders[2], 49.5)  # 0.5 lower, within 1.96 x (0.5² + 0.5²)^½ = 1.39
    assert not noise["champion"] and "within the noise" in noise["reason"] and aliases(client) == {"champion": "1", "challenger": "3"}
    better = registered(cfg, dataset, folders[3], 40.0)
    assert better["champion"] and better["reason"].endswith("better beyond the noise")
    assert aliases(client) == {"champion": "4", "challenger": "4"}
    again = registered(cfg, dataset, folders[1], 60.0)  # the worse one once more: found, and nothing moves
    assert again["reason"] == "already registered as v2; champion is v4" and aliases(client) == {"champion": "4", "challenger": "4"}
    # A version the gate never decided (its run was killed after registering it): the re-run decides it, registers nothing new.
    client.delete_model_version_tag("m", "2", "promotion")
    decided = registered(cfg, dataset, folders[1], 60.0)
    assert str(decided["version"]) == "2" and decided["reason"].endswith("not better") and not decided["champion"]
    assert aliases(client) == {"champion": "4", "challenger": "2"} and len(client.search_model_versions("name = 'm'")) == 4
    assert client.get_model_version("m", "2").tags["promotion"] == decided["reason"]

    # The champion's lineage tags lead `evaluate --model` back to its checkpoint and dataset.
    assert evaluation_inputs(cfg, "models:/m@champion") == (Path(dataset), folders[3])


def runs(client: mlflow.MlflowClient) -> list:
    """Every live MLflow run of the store, newest first."""
    return client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["attributes.start_time DESC"])


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
def test_register_retried_after_an_error_anywhere_leaves_one_run_and_one_version(
    client: mlflow.MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The retries of transient errors: one while the run is logged (it leaves a half-logged run), one with the run logged
    and no version registered yet (`register@logged`); the retry that gets through registers the one whole run."""
    cfg = config(tmp_path)
    dataset = ingest(cfg)
    folder = checkpoints(tmp_path / "gan-work" / "ray_results" / "train-test", epochs=1)[0]

    def unanswered(*_: object) -> None:
        raise MlflowException("the store did not answer")

    with monkeypatch.context() as patch:
        patch.setattr(register_stage, "_log_generator", unanswered)
        with pytest.raises(MlflowException, match="did not answer"):
            registered(cfg, dataset, folder, 50.0)
    half = runs(client)
    assert [r.info.status for r in half] == ["FAILED"]

    monkeypatch.setenv("GAN_PIPELINE_FAIL_AT", "register@logged")
    with pytest.raises(InjectedFailure, match="^register@logged: failure injected with its MLflow run logged and no version registered yet"):
        registered(cfg, dataset, folder, 50.0)
    logged = runs(client)  # the half-logged run deleted, the whole one kept
    assert [r.info.status for r in logged] == ["FINISHED"] and logged[0].info.run_id != half[0].info.run_id
    assert client.search_model_versions("name = 'm'") == []

    monkeypatch.delenv("GAN_PIPELINE_FAIL_AT")
    done = registered(cfg, dataset, folder, 50.0)
    assert (done["run_id"], str(done["version"]), done["reason"]) == (logged[0].info.run_id, "1", "no champion yet")
    assert [r.info.run_id for r in runs(client)] == [done["run_id"]]
    assert [v.run_id for v in client.search_model_versions("name = 'm'")] == [done["run_id"]]


@pytest.fixture(scope="module")
def mlflow_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, uri = services.mlflow_server(tmp_path_factory.mktemp("mlflow-server"), dict(os.environ))
    try:
        services.wait_healthy(f"{uri}/health", process)
        yield uri
    finally:
        services.stop(process)


@pytest.mark.integration
def test_promote_and_rollback_from_the_cli_against_an_mlflow_server(mlflow_server_uri: str, tmp_path: Path) -> None:
    """The CLI in fresh processes, with the registry named by MLFLOW_TRACKING_URI: the champion moves there and back."""
    client = mlflow.MlflowClient(tracking_uri=mlflow_server_uri, registry_uri=mlflow_server_uri)
    client.create_registered_model("drill")
    # A server accepts a version's source only inside a resource the request names: here runs:/ with its run_id. It refuses
    # a file:// path outside that run's artifacts, and a logged model's models:/m-... without the model_id.
    run_id = client.create_run(client.create_experiment("drill")).info.run_id
    for _ in range(2):
        client.create_model_version("drill", source=f"runs:/{run_id}/generator", run_id=run_id)
    move_champion(client, "drill", "1", "no champion yet", by="promotion gate")

    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server_uri, "GAN_PIPELINE_USER": "alice", "PYTHONPATH": str(ROOT)}
    for args, said, champion in (
        (["promote", "drill", "2", "--why", "drill"], "drill: champion v2 (was v1)", "2"),
        (["rollback", "drill", "--why", "drill over"], "drill: champion v1 (was v2)", "1"),
    ):
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0 and said in done.stdout, done.stderr[-2000:]
        assert str(client.get_model_version_by_alias("drill", "champion").version) == champion
    history = json.loads(client.get_registered_model("drill").tags[promotion.HISTORY_TAG])
    assert [(h["version"], h["previous"], h["by"], h["why"]) for h in history] == [
        ("1", None, "promotion gate", "no champion yet"), ("2", "1", "alice", "drill"), ("1", "2", "alice", "rollback from v2: drill over"),
    ]
    assert client.get_model_version("drill", "1").tags["promotion"] == "rolled back to by alice from v2: drill over"
    assert not (tmp_path / "gan-work" / "mlflow.db").exists()
