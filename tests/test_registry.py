"""Champion / challenger promotion against a real (SQLite) MLflow registry."""

from pathlib import Path

import mlflow
import pytest

from pipelines.register import _promote


@pytest.fixture()
def client(tmp_path: Path) -> mlflow.MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    client.create_registered_model("m")
    yield client
    mlflow.set_tracking_uri(None)


def new_version(client: mlflow.MlflowClient, fid: float, extractor: str = "clf-a") -> tuple:
    version = client.create_model_version("m", source="file:///nowhere", tags={"fid": str(fid), "feature_extractor": extractor})
    return version, {"model": {"fid": fid}, "feature_extractor": extractor}


def aliases(client: mlflow.MlflowClient) -> dict[str, str]:
    return {alias: str(client.get_model_version_by_alias("m", alias).version) for alias in ("champion", "challenger")}


def test_champion_moves_only_on_a_comparable_improvement(client: mlflow.MlflowClient) -> None:
    assert _promote(client, "m", *new_version(client, 50.0)) == (True, "no champion yet")
    assert aliases(client) == {"champion": "1", "challenger": "1"}

    promoted, why = _promote(client, "m", *new_version(client, 60.0))
    assert not promoted and "does not beat champion v1" in why
    assert aliases(client) == {"champion": "1", "challenger": "2"}

    promoted, why = _promote(client, "m", *new_version(client, 40.0))
    assert promoted and why == "FID 40.00 < champion v1's 50.00"
    assert aliases(client) == {"champion": "3", "challenger": "3"}

    promoted, why = _promote(client, "m", *new_version(client, 1.0, extractor="clf-b"))
    assert not promoted and "not comparable" in why
    assert aliases(client) == {"champion": "3", "challenger": "4"}
