"""What a recipe's device-dependent settings become on the device a run trains on.

The config keeps 'auto' (a run's identity and its saved config do not depend on the machine); `for_device` turns it into
what runs: bf16 on CUDA devices that support it and fp32 elsewhere, channels_last for conv nets on CUDA, step capture on
CUDA where `config.capture_problem` finds nothing against it, and the GPU batch with its learning rates. On a CPU every
'auto' is what the run did before these switches existed, so CPU runs stay bit-identical.
"""

import torch

from gan.config import Recipe, batch_lr_factor, capture_problem, check_capture, device_batch


def for_device(recipe: Recipe, device: torch.device, world_size: int = 1) -> Recipe:
    """The recipe as it runs on `device` with `world_size` workers: no 'auto' left, train.batch_size the device's batch
    (train.gpu_batch_size then 0, so resolving again changes nothing) and the learning rates scaled to it."""
    t, o, cuda = recipe.train, recipe.optim, device.type == "cuda"
    precision = t.precision if t.precision != "auto" else "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    channels_last = t.channels_last if t.channels_last != "auto" else cuda and recipe.model.arch != "mlp"
    factor = batch_lr_factor(t, cuda)
    train = t.model_copy(update={"precision": precision, "channels_last": channels_last, "batch_size": device_batch(t, cuda), "gpu_batch_size": 0})
    optim = o.model_copy(update={"lr_g": o.lr_g * factor, "lr_d": o.lr_d * factor}) if factor != 1 else o
    resolved = recipe.model_copy(update={"train": train, "optim": optim})
    check_capture(resolved, world_size)
    capture = t.capture if t.capture != "auto" else cuda and capture_problem(resolved, world_size) is None
    return resolved.model_copy(update={"train": train.model_copy(update={"capture": capture})})


def device_settings(recipe: Recipe, device: torch.device) -> dict:
    """What a resolved recipe runs with, for the checkpoint (`device_json`) and the start-up line."""
    t = recipe.train
    return {"device": device.type, "precision": t.precision, "channels_last": t.channels_last, "capture": t.capture,
            "fused_optimizer": device.type == "cuda" and recipe.optim.optimizer == "adam", "batch_size": t.batch_size, "lr_g": recipe.optim.lr_g, "lr_d": recipe.optim.lr_d}
