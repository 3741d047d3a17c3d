"""The training state: every part that learns or counts, named once. Checkpoint keys derive from it."""

import copy
import json
from dataclasses import Field, dataclass, field, fields

import torch
from torch import nn

from gan.config import Recipe
from gan.device import for_device
from gan.latent import Latent
from gan.networks import build_discriminator, build_generator
from gan.optim import build_optimizer, lazy_ratio


@dataclass
class TrainingState:
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    scaler_G: torch.amp.GradScaler  # fp16's dynamic loss scales, one per network; disabled (and empty) otherwise
    scaler_D: torch.amp.GradScaler
    step: int = 0  # batches done (one D step each)
    epoch: int = 0
    train_seconds: float = 0.0  # wall time spent training, summed over resumes
    schedule_steps: int = 0  # steps the schedules run over: steps per epoch x the epochs to train
    epochs_planned: int = 0  # with a time budget, the epochs it buys: decided once, after the first epoch (0: not yet)
    history: list[dict] = field(default_factory=list)  # logged stats: [{"step": int, name: float, ...}]
    snapshots: list[dict] = field(default_factory=list)  # quick FIDs: [{"epoch", "step", "seconds", "unix", "fid", "yardstick"}]
    lr_scale: float = 1.0  # halved by each watchdog rollback
    events: list[dict] = field(default_factory=list)  # watchdog: [{"epoch", "step", "kind", "detail"}]
    epoch_log: list[dict] = field(default_factory=list)  # per epoch: [{"epoch", "step", "images", "seconds", "unix"}]
    ada_p: float = 0.0  # adaptive augmentation's probability (gan.ada), where reg.ada is on

    def state_dict(self) -> dict:
        """Tensors and plain values only (lists as JSON): loadable with torch.load(weights_only=True)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[_key(f)] = value.state_dict() if hasattr(value, "state_dict") else json.dumps(value) if _is_list(f) else value
        return out

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "state_dict"):
                value.load_state_dict(state[_key(f)])
            elif _key(f) not in state and f.name in ADDED_LATER:
                setattr(self, f.name, f.default)
            else:
                setattr(self, f.name, json.loads(state[_key(f)]) if _is_list(f) else f.type(state[_key(f)]))


def _is_list(f: Field) -> bool:
    return getattr(f.type, "__origin__", None) is list


def _key(f: Field) -> str:
    return f.name + "_json" if _is_list(f) else f.name


STATE_KEYS = tuple(_key(f) for f in fields(TrainingState))  # what every checkpoint holds besides its metadata
ADDED_LATER = ("epochs_planned", "ada_p")  # parts older checkpoints lack: they load with the part's default
NETWORKS = ("G", "D", "G_ema")  # what a warm start always takes from its parent
OPTIMISERS = ("opt_G", "opt_D", "scaler_G", "scaler_D")  # ... and with its optimisers


def warm_start(s: TrainingState, parent: dict, optimisers: bool) -> None:
    """Start from a parent checkpoint state: its networks and ADA's p (and with `optimisers` the optimisers' moments and
    fp16 loss scales), while the step, epoch, clock, schedules, logs and the watchdog's record stay at zero."""
    for name in NETWORKS:
        getattr(s, name).load_state_dict(parent[name])
    s.ada_p = float(parent.get("ada_p", 0.0))  # the parent's D was trained at this augmentation level: go on from it
    for name in OPTIMISERS if optimisers else ():
        part = getattr(s, name)
        if not parent[name]:  # the loss scale of a parent that trained without fp16: this run's own starts afresh
            continue
        # An optimiser's state dict carries its settings too (lr, betas, weight decay): keep this run's, take the moments.
        own = [{k: v for k, v in group.items() if k != "params"} for group in getattr(part, "param_groups", [])]
        part.load_state_dict(copy.deepcopy(parent[name]))  # an optimiser keeps the tensors it is given: never the parent's own
        for group, settings in zip(getattr(part, "param_groups", []), own):
            group.update(settings)


def d_ratio(recipe: Recipe) -> float:
    """D's lazy-R1 correction of its learning rate and betas (`optim.lazy_ratio`); 1 without R1."""
    return lazy_ratio(recipe.reg.r1_every) if recipe.reg.r1_gamma > 0 else 1.0


def build_state(recipe: Recipe, image_shape: tuple[int, ...], latent: Latent, device: torch.device) -> TrainingState:
    """Fresh networks and optimisers, as `device` runs the recipe (`device.for_device`: 'auto' settings made concrete).
    Seeded identically on every rank (DDP also broadcasts rank 0's weights)."""
    recipe = for_device(recipe, device)
    torch.manual_seed(recipe.train.seed)
    G = build_generator(recipe.model, image_shape, latent).to(device)
    D = build_discriminator(recipe.model, image_shape, latent).to(device)
    if recipe.train.channels_last and len(image_shape) == 3:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    o, fused, fp16 = recipe.optim, device.type == "cuda", recipe.train.precision == "fp16"
    ratio = d_ratio(recipe)
    return TrainingState(
        G, D, copy.deepcopy(G).eval().requires_grad_(False),
        build_optimizer(o, G.parameters(), o.lr_g, o.weight_decay_g, fused),
        build_optimizer(o, D.parameters(), o.lr_d * ratio, o.weight_decay_d, fused, ratio),
        torch.amp.GradScaler(device.type, enabled=fp16), torch.amp.GradScaler(device.type, enabled=fp16),
    )
