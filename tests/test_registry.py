"""Champion / challenger promotion against a real (SQLite) MLflow registry: the gate, and promote / rollback by hand."""

from pathlib import Path

import mlflow
import pytest

from pipelines import promotion
from pipelines.config import PipelineConfig, UsageError
from pipelines.register import _promote, promote, rollback

MAX_MEMORISED = 0.2


@pytest.fixture()
def client(tmp_path: Path) -> mlflow.MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'gan-work' / 'mlflow.db'}")
    (tmp_path / "gan-work").mkdir()
    client = mlflow.MlflowClient()
    client.create_registered_model("m")
    yield client
    mlflow.set_tracking_uri(None)


def new_version(client: mlflow.MlflowClient, fid: float, std: float = 0.1, extractor: str = "clf-a", n: int = 1000, memorised: float = 0.01) -> tuple:
    report = {"model": {"fid": fid, "fid_bootstrap_std": std}, "feature_extractor": extractor, "num_images": n,
              "memorisation": {"pixels": {"memorised_share": memorised}}}
    version = client.create_model_version("m", source="file:///nowhere", tags=promotion.Standing.of_report("", report).tags())
    return version, report


def aliases(client: mlflow.MlflowClient) -> dict[str, str]:
    return {alias: str(client.get_model_version_by_alias("m", alias).version) for alias in ("champion", "challenger")}


def gate(client: mlflow.MlflowClient, *args: object, **kwargs: object) -> tuple[bool, str]:
    return _promote(client, "m", *new_version(client, *args, **kwargs), MAX_MEMORISED)


def test_champion_moves_only_beyond_the_noise_on_the_same_yardstick(client: mlflow.MlflowClient) -> None:
    assert gate(client, 50.0) == (True, "no champion yet")
    assert aliases(client) == {"champion": "1", "challenger": "1"}

    promoted, why = gate(client, 60.0)  # worse
    assert not promoted and why.endswith("not better") and aliases(client) == {"champion": "1", "challenger": "2"}

    promoted, why = gate(client, 49.8, std=0.2)  # lower, but within the noise: 49.8 + 0.39 > 50 - 0.20
    assert not promoted and "within the noise" in why and aliases(client)["champion"] == "1"

    promoted, why = gate(client, 40.0)
    assert promoted and why == "FID 40.00 ± 0.20 against champion v1's 50.00 ± 0.20: better beyond the noise"
    assert aliases(client) == {"champion": "4", "challenger": "4"}
    assert client.get_model_version("m", "4").tags["promotion"] == why

    for kwargs in ({"extractor": "clf-b"}, {"n": 500}):  # another yardstick: never compared
        promoted, why = gate(client, 1.0, **kwargs)
        assert not promoted and "not comparable" in why and aliases(client)["champion"] == "4"

    promoted, why = gate(client, 1.0, memorised=0.5)  # far better, but it copies its training images
    assert not promoted and "hands back training images: 50.0%" in why and aliases(client)["champion"] == "4"


def test_promote_and_rollback_by_hand_leave_who_and_why(client: mlflow.MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_PIPELINE_USER", "alice")
    cfg = PipelineConfig.model_validate({"runtime": {"workdir": str(tmp_path / "gan-work")}, "registry": {"model_name": "m"}})
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
    with pytest.raises(UsageError, match=r"no version '9'; registered versions: \['3', '2', '1'\]|no version '9'"):
        promote(cfg, "m", "9", "typo")
