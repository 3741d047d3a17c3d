"""Complete, self-describing training checkpoints, loaded without unpickling arbitrary objects."""

import json
import os
from pathlib import Path

import torch

from gan.config import ModelConfig
from gan.files import replacing
from gan.hashing import sha256_file
from gan.latent import Latent
from gan.networks import build_generator
from gan.saved import load_tensors
from gan.state import ADDED_LATER, STATE_KEYS

FORMAT_VERSION = 4  # 2: training state named by gan.state, class count, quick-FID snapshots; 3: epoch log, watchdog events and
# learning-rate scale; 4: fp16 loss scalers
STATE_FILE = "state.pt"
LINEAGE_FILE = "lineage.json"  # beside state.pt, written by whoever trained it: its run, its training key, its parent
REQUIRED = (*(k for k in STATE_KEYS if k not in ADDED_LATER), "rng", "config_json", "image_shape", "num_classes")


class CheckpointError(ValueError):
    """A checkpoint is missing, not one this project wrote (a pickle that would run code, a truncated or corrupt file),
    from another format version, or incomplete."""


def save(state: dict, directory: Path) -> Path:
    """Write `directory`/state.pt whole or not at all. A failed write (a full disk) removes its partial file and raises an
    OSError naming state.pt: torch's own error for it is a RuntimeError about stream positions."""
    assert set(REQUIRED) <= state.keys(), f"checkpoint state lacks {set(REQUIRED) - state.keys()}"
    path = Path(directory) / STATE_FILE
    try:
        with replacing(path) as tmp, open(tmp, "wb") as file:  # synced before the rename: a disk full on write-back fails here
            torch.save({"format_version": FORMAT_VERSION, **state}, file)
    except (OSError, RuntimeError) as err:
        cause = err if isinstance(err, OSError) else err.__context__  # torch wraps the file's OSError in a RuntimeError
        if not isinstance(cause, OSError):
            raise
        raise OSError(cause.errno, os.strerror(cause.errno) if cause.errno else str(cause), str(path)) from err
    return path


def load(directory: Path) -> dict:
    """The training state in `directory`/state.pt: tensors and plain containers only, nothing unpickled."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {STATE_FILE}; expected a training checkpoint folder")
    return _checked(load_tensors(path, str(path), "a checkpoint this project wrote", CheckpointError), path)


def load_bytes(blob: bytes, where: str) -> dict:
    """A checkpoint state from the bytes of its state.pt (as a Ray worker gets a warm start's parent); `where` names it."""
    return _checked(load_tensors(blob, where, "a checkpoint this project wrote", CheckpointError), where)


def _checked(state: dict, path: object) -> dict:
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {state.get('format_version')!r}, expected {FORMAT_VERSION}")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {missing}")
    return state


def digest(directory: Path) -> str:
    """sha256 of a checkpoint's state.pt: what names it as a warm start's parent."""
    return sha256_file(Path(directory) / STATE_FILE)


def lineage_of(directory: Path) -> dict:
    """What the checkpoint's trainer recorded beside it (LINEAGE_FILE); {} when it recorded nothing."""
    path = Path(directory) / LINEAGE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def config_of(state: dict) -> dict:
    """The resolved config the checkpoint was trained with."""
    return json.loads(state["config_json"])


def history_of(state: dict) -> list[dict]:
    """Logged training stats so far: [{'step': int, name: float, ...}, ...]."""
    return json.loads(state["history_json"])


def snapshots_of(state: dict) -> list[dict]:
    """Quick FIDs measured during training: [{'epoch', 'step', 'seconds', 'unix', 'fid', 'yardstick'}, ...] ('unix' absent in
    checkpoints written before it was recorded)."""
    return json.loads(state["snapshots_json"])


def ema_generator(state: dict) -> tuple[torch.nn.Module, ModelConfig, Latent]:
    """The EMA generator of a checkpoint state, in eval mode, with its model config and latent layout."""
    return generator_of(generator_blob(state))


def generator_blob(state: dict) -> dict:
    """What the served model keeps of a checkpoint state: the EMA generator's weights and what rebuilds its network."""
    model_json = ModelConfig.model_validate(config_of(state)["model"]).model_dump_json()
    return {"state": state["G_ema"], "model_json": model_json, "image_shape": list(state["image_shape"]), "num_classes": int(state["num_classes"])}


def generator_of(blob: dict) -> tuple[torch.nn.Module, ModelConfig, Latent]:
    """The generator of a `generator_blob`, in eval mode, with its model config and latent layout."""
    model_cfg = ModelConfig.model_validate_json(blob["model_json"])
    latent = Latent.of(model_cfg, int(blob["num_classes"]))
    G = build_generator(model_cfg, tuple(blob["image_shape"]), latent)
    G.load_state_dict(blob["state"])
    return G.eval(), model_cfg, latent
