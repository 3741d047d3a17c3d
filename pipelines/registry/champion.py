"""Moving `champion`: the gate's moves and a person's (`promote`, `rollback`), each appended with who and why to the
model's champion history (`promotion.HISTORY_TAG`), which `rollback` walks back through."""

from pipelines.config import PipelineConfig
from pipelines.registry import head_to_head, promotion
from pipelines.registry.client import CHAMPION, PROMOTION_TAG, connect, model_version


def move_champion(client, name: str, version: str, why: str, by: str | None = None, rollback: bool = False) -> str | None:  # noqa: ANN001
    """Point `champion` at `version` and append the move to the model's champion history; returns the previous champion."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        previous = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, CHAMPION, version)
    history = client.get_registered_model(name).tags.get(promotion.HISTORY_TAG)
    client.set_registered_model_tag(name, promotion.HISTORY_TAG, promotion.record(history, version, previous, why, by, rollback))
    return previous


def promote(cfg: PipelineConfig, name: str, version: str, why: str) -> str:
    """A person's promotion: champion -> version, whatever the gate would say, recorded with who and why."""
    client = connect(cfg)
    found = model_version(client, name, version)
    version = str(found.version)
    previous = move_champion(client, name, version, why)
    client.set_model_version_tag(name, version, PROMOTION_TAG, f"promoted by {promotion.user()}: {why}")
    return f"{name}: champion v{version} (was {'v' + previous if previous else 'none'})" + head_to_head.follow_champion(client, name, found)


def rollback(cfg: PipelineConfig, name: str, why: str) -> str:
    """champion -> the champion before it, per the recorded history."""
    client = connect(cfg)
    current = str(model_version(client, name, CHAMPION).version)
    previous = promotion.previous_champion(name, client.get_registered_model(name).tags.get(promotion.HISTORY_TAG), current)
    move_champion(client, name, previous, f"rollback from v{current}: {why}", rollback=True)
    client.set_model_version_tag(name, previous, PROMOTION_TAG, f"rolled back to by {promotion.user()} from v{current}: {why}")
    return f"{name}: champion v{previous} (was v{current})" + head_to_head.follow_champion(client, name, client.get_model_version(name, previous))
