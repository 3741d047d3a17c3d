"""Complete, self-describing training checkpoints, loaded without unpickling arbitrary objects."""

import json
from pathlib import Path

import torch

FORMAT_VERSION = 1
STATE_FILE = "state.pt"
REQUIRED = ("G", "D", "G_ema", "opt_G", "opt_D", "step", "epoch", "rng", "config_json", "image_shape", "history_json")


class CheckpointError(ValueError):
    """A checkpoint is missing, from another format version, or incomplete."""


def save(state: dict, directory: Path) -> Path:
    assert set(REQUIRED) <= state.keys(), f"checkpoint state lacks {set(REQUIRED) - state.keys()}"
    path = Path(directory) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save({"format_version": FORMAT_VERSION, **state}, tmp)
    tmp.replace(path)
    return path


def load(directory: Path) -> dict:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {STATE_FILE}; expected a training checkpoint folder")
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain containers only
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {state.get('format_version')!r}, expected {FORMAT_VERSION}")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {missing}")
    return state


def config_of(state: dict) -> dict:
    """The resolved config the checkpoint was trained with."""
    return json.loads(state["config_json"])


def history_of(state: dict) -> list[dict]:
    """Logged training stats so far: [{'step': int, name: float, ...}, ...]."""
    return json.loads(state["history_json"])
