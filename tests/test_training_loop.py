"""The training loop without Ray: it learns, its checkpoints are complete, and a resumed run equals an uninterrupted one."""

import math
from pathlib import Path

import numpy as np
import torch

from gan import checkpoint
from gan.config import ModelConfig, TrainConfig
from gan.data import load_source
from gan.training_loop import ema_beta, in_memory_batches, train


class Recorder:
    def __init__(self) -> None:
        self.logged, self.sampled, self.epochs, self.states = [], [], [], []

    def log(self, step: int, stats: dict[str, float]) -> None:
        self.logged.append((step, stats))

    def samples(self, step: int, images: torch.Tensor) -> None:
        self.sampled.append((step, images.shape))

    def epoch_end(self, epoch: int, metrics: dict[str, float], state) -> None:  # noqa: ANN001
        self.epochs.append(metrics)
        if state is not None:
            self.states.append(state())


def digits() -> np.ndarray:
    return load_source("bundled-digits").images[:512]  # [512, 1, 8, 8] uint8


def run(epochs: int, resume: dict | None = None, arch: str = "dcgan") -> Recorder:
    torch.set_num_threads(1)
    sink = Recorder()
    model = ModelConfig(arch=arch, z_dim=8, width=8, g_hidden=[32], d_hidden=[32])
    cfg = TrainConfig(epochs=epochs, batch_size=32, log_every_steps=4, sample_every_steps=16, num_sample_images=4, lr_d=1e-3)
    train(model, cfg, (1, 8, 8), in_memory_batches(digits(), 32, seed=0), sink, resume=resume)
    return sink


def test_discriminator_learns_and_everything_stays_finite() -> None:
    sink = run(epochs=2)
    assert len(sink.epochs) == 2 and sink.epochs[-1]["step"] == 32
    assert all(math.isfinite(v) for m in sink.epochs for v in m.values())
    first, last = sink.logged[0][1], sink.logged[-1][1]
    assert last["d_real"] - last["d_fake"] > first["d_real"] - first["d_fake"]  # D separates real from fake
    assert sink.sampled[0] == (16, (4, 1, 8, 8))


def test_checkpoint_is_complete_and_loads_without_pickle(tmp_path: Path) -> None:
    state = run(epochs=1, arch="mlp").states[-1]
    checkpoint.save(state, tmp_path)
    loaded = checkpoint.load(tmp_path)
    assert loaded["step"] == 16 and loaded["epoch"] == 1
    assert checkpoint.config_of(loaded)["model"]["arch"] == "mlp"
    assert len(checkpoint.history_of(loaded)) == 4
    for key in ("G", "G_ema", "D"):
        assert all(torch.equal(loaded[key][k], state[key][k]) for k in state[key])


def test_resumed_run_equals_uninterrupted_run() -> None:
    straight = run(epochs=2).states[-1]
    halfway = run(epochs=1).states[-1]
    resumed = run(epochs=2, resume=halfway).states[-1]
    assert resumed["step"] == straight["step"] == 32
    for key in ("G", "D", "G_ema"):
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name} differs after resume"


def test_ema_ramp() -> None:
    assert ema_beta(0.999, 0) == 0.1 and ema_beta(0.999, 10**6) == 0.999
