"""The training loop without Ray: it learns and stays finite for every loss, its checkpoints are complete,
a resumed run equals an uninterrupted one, and the phases (n_critic, lazy R1, weight clipping, EMA) do what they say."""

import copy
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gan import checkpoint, optim
from gan.config import ModelConfig, Recipe, TrainConfig
from gan.data.sources import load_source
from gan.distributed import BATCHNORM, rank_seed
from gan.latent import Latent
from gan.networks import build_generator
from gan.objectives import LOSSES
from gan.state import ADDED_LATER, STATE_KEYS
from gan.batches import in_memory_batches, mirrored
from gan.ema import ema_beta, recompute_bn_stats
from gan.training_loop import budget_pace, epoch_pace, plan_due, planned_epochs, schedule_steps, train
from pipelines.config import PRESETS_DIR, load_config, preset_path

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)
# A plain recipe, independent of the library's defaults: unconditional, no spectral norm, ns, constant Adam.
TINY = {
    "model": dict(arch="dcgan", z_dim=8, g_width=8, d_width=8, g_hidden=[32], d_hidden=[32], conditional=False, spectral_norm=False),
    "train": dict(loss="ns", epochs=2, batch_size=32, log_every_steps=4, sample_every_steps=16, num_sample_images=4),
    "optim": dict(lr_g=2e-4, lr_d=1e-3, beta1=0.5, beta2=0.999, schedule="constant"),
}


class Recorder:
    """A Sink that keeps everything; `stop_after` simulates a crash after that epoch's checkpoint."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.logged, self.sampled, self.epochs, self.states = [], [], [], []
        self.stop_after = stop_after

    def log(self, step: int, stats: dict[str, float]) -> None:
        self.logged.append((step, stats))

    def samples(self, step: int, images: torch.Tensor) -> None:
        self.sampled.append((step, images.shape))

    def epoch_end(self, epoch: int, metrics: dict[str, float], state) -> None:  # noqa: ANN001
        self.epochs.append(metrics)
        if state is not None:
            self.states.append(copy.deepcopy(state()))  # the state shares memory with the live weights, which train on
        if epoch == self.stop_after:
            raise Interrupted


class Interrupted(Exception):
    pass


def recipe(**sections: dict) -> Recipe:
    """TINY with some keys of some sections overridden, e.g. recipe(train=dict(loss='hinge'))."""
    return Recipe.model_validate({name: {**TINY.get(name, {}), **sections.get(name, {})} for name in {*TINY, *sections}})


def digits(rows: slice = slice(0, 512)) -> tuple[np.ndarray, np.ndarray]:
    source = load_source("bundled-digits")
    return source.images[rows], source.labels[rows]  # [N, 1, 8, 8] uint8, [N] int64


def run(r: Recipe, resume: dict | None = None, sink: Recorder | None = None, steps_per_epoch: int | None = None, **loop: object) -> Recorder:
    """`train` on 512 8x8 digits; `loop` passes further keyword arguments (init, nan_at_step, ...)."""
    sink = sink or Recorder()
    batches = in_memory_batches(*digits(), r.train.batch_size, seed=0)
    try:
        train(r, SHAPE, 10, batches, sink, resume=resume, steps_per_epoch=steps_per_epoch, **loop)
    except Interrupted:
        pass
    return sink


def all_finite(sink: Recorder) -> bool:
    return all(math.isfinite(v) for m in sink.epochs for v in m.values()) and all(
        math.isfinite(v) for _, stats in sink.logged for v in stats.values()
    )


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), f"{what}.{name} differs"


def test_discriminator_learns_and_everything_stays_finite() -> None:
    sink = run(recipe())
    assert len(sink.epochs) == 2 and sink.epochs[-1]["step"] == 32
    assert all_finite(sink)
    first, last = sink.logged[0][1], sink.logged[-1][1]
    assert last["d_real"] - last["d_fake"] > first["d_real"] - first["d_fake"]  # D separates real from fake
    assert sink.sampled[0] == (16, (4, *SHAPE))


@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_trains_two_epochs_and_stays_finite(loss: str) -> None:
    sink = run(recipe(train=dict(loss=loss)))
    assert [m["epoch"] for m in sink.epochs] == [1, 2] and all_finite(sink)
    metrics = sink.epochs[-1]
    assert {"loss_d", "loss_g", "d_real", "d_fake"} <= metrics.keys()
    assert ("w_distance" in metrics) == loss.startswith("wgan") and ("gp" in metrics) == (loss == "wgan-gp")
    assert metrics["loss_d"] != sink.epochs[0]["loss_d"]  # something moved


def test_bf16_autocast_and_channels_last_train_and_stay_finite() -> None:
    """The GPU switches run on CPU too: same loop, bf16 forwards, float32 losses and weights."""
    sink = run(recipe(model=dict(spectral_norm=True), train=dict(precision="bf16", channels_last=True, loss="hinge")))
    assert all_finite(sink) and len(sink.epochs) == 2
    assert all(t.dtype == torch.float32 for t in sink.states[-1]["G"].values() if t.is_floating_point())


def test_checkpoint_is_complete_and_loads_without_pickle(tmp_path: Path) -> None:
    r = recipe(model=dict(arch="mlp"), train=dict(epochs=1))
    state = run(r).states[-1]
    assert set(STATE_KEYS) - set(ADDED_LATER) <= set(checkpoint.REQUIRED) and {"G", "D", "G_ema", "opt_G", "opt_D", "step"} <= set(STATE_KEYS)
    assert set(STATE_KEYS) <= set(state)  # every part is written; the ones added later are only not required of older files
    checkpoint.save(state, tmp_path)
    loaded = checkpoint.load(tmp_path)  # torch.load(weights_only=True) inside
    assert loaded["step"] == 16 and loaded["epoch"] == 1 and loaded["num_classes"] == 10
    assert Recipe.model_validate(checkpoint.config_of(loaded)) == r  # the resolved config, complete
    assert len(checkpoint.history_of(loaded)) == 4
    for key in ("G", "G_ema", "D"):
        assert_same_tensors(loaded[key], state[key], key)
    assert loaded["opt_D"]["state"].keys() == state["opt_D"]["state"].keys()
    # Self-describing: the generator rebuilds from the checkpoint alone.
    model = ModelConfig(**checkpoint.config_of(loaded)["model"])
    build_generator(model, tuple(loaded["image_shape"]), Latent.of(model, loaded["num_classes"])).load_state_dict(loaded["G_ema"])
    # An incomplete checkpoint is named as such.
    torch.save({k: v for k, v in loaded.items() if k != "opt_D"}, tmp_path / checkpoint.STATE_FILE)
    with pytest.raises(checkpoint.CheckpointError, match="opt_D"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize(("precision", "fused"), [("fp32", False), ("fp16", False), ("fp32", True)])
def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str, fused: bool) -> None:
    """Interrupted after epoch 1 of 3, through a saved checkpoint; phases, augmentation, dropout and a schedule in play;
    with fp16, the loss scalers' state travels in the checkpoint too; `fused`: the fused Adam that CUDA devices get
    (torch runs it on CPUs too), whose state (its step as a tensor) travels the same way."""
    if fused:
        import gan.state  # noqa: PLC0415

        built = []
        monkeypatch.setattr(gan.state, "build_optimizer", lambda *a, **k: built.append(1) or optim.build_optimizer(*a[:4], True, *a[5:], **k))
    r = recipe(
        train=dict(epochs=3, n_critic=2, checkpoint_every_epochs=1, sample_every_steps=8, precision=precision),
        reg=dict(r1_gamma=1.0, r1_every=3, diffaugment="translation,cutout"),
        model=dict(d_dropout=0.2),
        optim=dict(schedule="linear", decay_start=0.0),
    )
    straight = run(r).states[-1]
    checkpoint.save(run(r, sink=Recorder(stop_after=1)).states[-1], tmp_path)
    resumed = run(r, resume=checkpoint.load(tmp_path)).states[-1]
    assert resumed["step"] == straight["step"] == 48
    for key in ("G", "D", "G_ema"):
        assert_same_tensors(straight[key], resumed[key], key)
    for key in ("opt_G", "opt_D"):
        for i, param_state in straight[key]["state"].items():
            assert_same_tensors(param_state, resumed[key]["state"][i], f"{key}[{i}]")
    assert checkpoint.history_of(straight) == checkpoint.history_of(resumed)
    assert straight["scaler_G"] == resumed["scaler_G"] and straight["scaler_D"] == resumed["scaler_D"]
    assert (precision == "fp16") == bool(straight["scaler_D"])  # a disabled scaler has no state
    assert not fused or (built and straight["opt_D"]["param_groups"][0]["fused"])
    if precision == "fp16":
        assert 0 < straight["scaler_D"]["scale"] <= 2.0**16 and all_finite(run(r))


def test_ema_ramp() -> None:
    betas = [ema_beta(0.999, t) for t in range(0, 10**4, 50)]
    assert ema_beta(0.999, 0) == 0.1 and ema_beta(0.999, 10**6) == 0.999
    assert betas == sorted(betas)
    assert ema_beta(0.999, 0, warmup=2) == 0.5


def test_n_critic_takes_that_many_d_steps_per_g_step() -> None:
    sink = run(recipe(train=dict(epochs=1, n_critic=3, log_every_steps=1)))
    state = sink.states[-1]
    d_steps = {int(s["step"]) for s in state["opt_D"]["state"].values()}
    g_steps = {int(s["step"]) for s in state["opt_G"]["state"].values()}
    assert d_steps == {16} and g_steps == {5}  # G steps at batches 3, 6, 9, 12, 15
    assert [step for step, stats in sink.logged if "loss_g" in stats] == [3, 6, 9, 12, 15]


def test_lazy_r1_runs_every_r1_every_steps() -> None:
    sink = run(recipe(train=dict(epochs=1, log_every_steps=1), reg=dict(r1_gamma=1.0, r1_every=4)))
    assert [step for step, stats in sink.logged if "r1" in stats] == [4, 8, 12, 16]
    assert all(stats["r1"] > 0 for _, stats in sink.logged if "r1" in stats)
    d_steps = {int(s["step"]) for s in sink.states[-1]["opt_D"]["state"].values()}
    assert d_steps == {16 + 4}  # Dreg steps D's optimiser too
    assert "r1" not in run(recipe(train=dict(epochs=1, log_every_steps=1))).logged[-1][1]


def test_wgan_keeps_d_weights_within_the_clip_value() -> None:
    state = run(recipe(train=dict(loss="wgan", clip_value=0.02))).states[-1]
    largest = max(t.abs().max().item() for t in state["D"].values())
    assert largest == pytest.approx(0.02)  # clipping was active and held


def test_ema_batchnorm_statistics_belong_to_the_ema_weights() -> None:
    """Recomputed for G_ema's own weights at the checkpoint's step, not copied from the live G or left stale."""
    r = recipe(train=dict(sample_every_steps=5, ema_bn_batches=2))  # sample grids recompute them mid-run too
    state = run(r).states[-1]
    latent = Latent.of(r.model, 10)
    G_ema = build_generator(r.model, SHAPE, latent)
    G_ema.load_state_dict(state["G_ema"])
    recompute_bn_stats(G_ema, latent, r.train.ema_bn_batches, rank_seed(r.train.seed, 0, state["step"], BATCHNORM), torch.device("cpu"))
    stats = [k for k in state["G_ema"] if k.endswith(("running_mean", "running_var"))]
    assert len(stats) >= 4
    for k in stats:
        assert torch.equal(G_ema.state_dict()[k], state["G_ema"][k]), k
        assert not torch.allclose(state["G_ema"][k], state["G"][k]), k


@pytest.mark.parametrize(
    "model, extra_stats",
    [
        (dict(arch="dcgan", conditional=True), set()),
        (dict(arch="resnet", conditional=True, g_width=4, d_width=4), set()),
        (dict(arch="dcgan", info_categorical=10, info_continuous=2), {"info_d", "info_g"}),
    ],
)
def test_conditional_and_infogan_recipes_train_and_checkpoint(tmp_path: Path, model: dict, extra_stats: set) -> None:
    r = recipe(model=model, train=dict(epochs=1))
    sink = run(r)
    assert all_finite(sink) and extra_stats <= sink.epochs[-1].keys()
    checkpoint.save(sink.states[-1], tmp_path)
    loaded = checkpoint.load(tmp_path)
    heads = {k.split(".")[0] for k in loaded["D"]}
    assert ("embed" in heads) == r.model.conditional and ("q" in heads) == bool(r.model.info_categorical)
    m = ModelConfig(**checkpoint.config_of(loaded)["model"])
    latent = Latent.of(m, loaded["num_classes"])
    G = build_generator(m, SHAPE, latent)
    G.load_state_dict(loaded["G_ema"])
    G.eval()
    z, c = latent.sample(4, torch.Generator().manual_seed(0))
    images = G(z, c)
    assert images.shape == (4, *SHAPE) and torch.isfinite(images).all()


def test_a_time_budget_is_turned_into_epochs_once_by_the_first_checkpoint() -> None:
    budget = TrainConfig(epochs=100, max_minutes=1.0)  # 60 s, 100 epochs of 10 steps at most
    assert planned_epochs(budget, 1, 6.0, 6.0) == 10  # 6 s epochs: the tenth ends at 60 s
    assert planned_epochs(budget, 1, 7.0, 7.0) == 1 + 8  # the ninth ends past 60 s (63 s)
    assert planned_epochs(budget, 1, 15.0, epoch_pace(10, 15.0, (5, 2.5))) == 1 + 9  # slow start-up: then 5 s epochs
    assert planned_epochs(budget, 1, 0.01, 0.01) == 100 and planned_epochs(budget, 1, 99.0, 99.0) == 1  # the bounds
    assert planned_epochs(budget, 4, 30.0, 10.0) == 4 + 3  # planned again mid-run: the seconds left at the pace now
    assert budget_pace([{"seconds": 9.0}], 5.0) == 5.0  # planned after the first epoch: its pace past the start-up
    assert budget_pace([{"seconds": 9.0}, {"seconds": 4.0}, {"seconds": 6.0}], 5.0) == 5.0  # later: the epochs after the first
    every5 = TrainConfig(epochs=100, max_minutes=1.0, checkpoint_every_epochs=5)
    assert [plan_due(SimpleNamespace(epoch=e, train_seconds=e * 1.0), every5) for e in (1, 4, 5)] == [False, False, True]  # the first checkpoint
    assert plan_due(SimpleNamespace(epoch=2, train_seconds=6.0), every5)  # or a tenth of the budget spent
    assert plan_due(SimpleNamespace(epoch=1, train_seconds=0.1), TrainConfig(epochs=100, max_minutes=1.0, checkpoint_every_epochs=1))
    assert schedule_steps(SimpleNamespace(epochs_planned=9), budget, 10) == 90
    assert schedule_steps(SimpleNamespace(epochs_planned=0), TrainConfig(epochs=7), 10) == 70


@pytest.mark.parametrize("every", [1, 2])
def test_a_budgeted_run_resumed_on_a_slower_clock_stops_where_it_would_have(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every: int) -> None:
    """The default config's shape (a time budget): the plan is made once, by the first checkpoint, and kept in it; a
    resume reads no clock, so it ends at the step and with the weights of the uninterrupted run."""
    import gan.training_loop as loop  # noqa: PLC0415

    def clock(tick: float) -> None:  # the loop's clock, moved on by `tick` s at each reading
        now = [0.0]
        monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: now.__setitem__(0, now[0] + tick) or now[0], time=time.time))

    r = recipe(train=dict(epochs=20, max_minutes=0.05, checkpoint_every_epochs=every, sample_every_steps=0),
               optim=dict(schedule="linear", decay_start=0.0))
    clock(0.5)  # 1 s epochs (0.73 s after start-up): the 3 s budget buys 4 of them
    straight = run(r).states[-1]
    assert every < straight["epochs_planned"] < 20 and straight["epoch"] == straight["epochs_planned"]  # the budget decided
    checkpoint.save(run(r, sink=Recorder(stop_after=every)).states[-1], tmp_path)
    clock(50.0)  # 100 x slower: planned afresh, it would stop after one more epoch
    resumed = run(r, resume=checkpoint.load(tmp_path)).states[-1]
    assert (resumed["step"], resumed["epochs_planned"]) == (straight["step"], straight["epochs_planned"])
    for key in ("G", "D", "G_ema"):
        assert_same_tensors(straight[key], resumed[key], key)


def test_a_finished_budgeted_run_given_more_budget_trains_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Raising train.max_minutes (or train.epochs) continues the run: its plan was made for the old budget."""
    import gan.training_loop as loop  # noqa: PLC0415

    now = [0.0]
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: now.__setitem__(0, now[0] + 0.5) or now[0], time=time.time))
    r = recipe(train=dict(epochs=20, max_minutes=0.05, checkpoint_every_epochs=1, sample_every_steps=0))
    finished = run(r).states[-1]
    more = recipe(train=dict(epochs=20, max_minutes=0.1, checkpoint_every_epochs=1, sample_every_steps=0))
    checkpoint.save(finished, tmp_path)
    continued = run(more, resume=checkpoint.load(tmp_path)).states[-1]
    assert finished["epoch"] < continued["epoch"] == continued["epochs_planned"] <= 20


def test_a_checkpoint_from_before_budgets_were_planned_still_resumes(tmp_path: Path) -> None:
    r = recipe(train=dict(epochs=2, checkpoint_every_epochs=1))
    older = {k: v for k, v in run(r, sink=Recorder(stop_after=1)).states[-1].items() if k not in ADDED_LATER}
    checkpoint.save(older, tmp_path)
    assert run(r, resume=checkpoint.load(tmp_path)).states[-1]["epoch"] == 2


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
def test_every_presets_recipe_trains_checkpoints_and_samples(tmp_path: Path, preset: str) -> None:
    """Each preset's own recipe (loss, networks, regularisers, optimiser, schedule), only narrowed and shortened, on
    8x8 digits; tests/test_presets.py runs some of them end to end through Ray, Prefect and MLflow."""
    shorter = ["model.g_width=8", "model.d_width=8", "train.epochs=1", "train.max_minutes=0", "train.batch_size=32",
               "train.sample_every_steps=8", "train.log_every_steps=4"]
    r = load_config(preset_path(preset), shorter).recipe
    sink = run(r)
    assert all_finite(sink) and sink.epochs[-1]["step"] == 16
    checkpoint.save(sink.states[-1], tmp_path)
    G, model, latent = checkpoint.ema_generator(checkpoint.load(tmp_path))
    assert model == r.model
    labels = torch.arange(4) % 10 if model.conditional else None
    z, c = latent.sample(4, torch.Generator().manual_seed(0), labels=labels)
    images = G(z, c)
    assert images.shape == (4, *SHAPE) and torch.isfinite(images).all()


def test_a_gpu_batch_goes_through_pinned_memory_without_a_host_sync() -> None:
    """The GPU path of `to_model_input`, checked on CPU: pinned, then copied with non_blocking=True; CPU batches are not
    pinned (pinning needs an accelerator)."""
    from gan.batches import to_model_input  # noqa: PLC0415

    class Batch:  # a uint8 batch in host memory that records what is done to it
        device = torch.device("cpu")

        def __init__(self) -> None:
            self.calls: list = []

        def pin_memory(self) -> "Batch":
            self.calls.append("pin_memory")
            return self

        def to(self, device: torch.device, non_blocking: bool = False) -> torch.Tensor:
            self.calls.append(("to", device.type, non_blocking))
            return torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)

    batch = Batch()
    x = to_model_input(batch, torch.device("cuda"))
    assert batch.calls == ["pin_memory", ("to", "cuda", True)] and x.dtype == torch.float32 and float(x.max()) == 1.0
    batch = Batch()
    to_model_input(batch, torch.device("cpu"))
    assert batch.calls == [("to", "cpu", True)]


def test_a_resumed_ada_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    """ADA's p lives in the training state and each epoch closes its last interval (16 steps an epoch, intervals of 3):
    a run interrupted after epoch 1 goes on with its p and ends bit for bit where the uninterrupted one does."""
    r = recipe(train=dict(epochs=3, checkpoint_every_epochs=1, loss="hinge"), reg=dict(ada=True, ada_interval=3, ada_images=2000))
    straight = run(r).states[-1]
    checkpoint.save(run(r, sink=Recorder(stop_after=1)).states[-1], tmp_path)
    resumed = run(r, resume=checkpoint.load(tmp_path)).states[-1]
    assert straight["ada_p"] == resumed["ada_p"] > 0
    for key in ("G", "D", "G_ema"):
        assert_same_tensors(straight[key], resumed[key], key)
    assert checkpoint.history_of(straight) == checkpoint.history_of(resumed)
    logged = {k for _, stats in run(r).logged for k in stats}
    assert {"ada_p", "ada_rt", "ada_sign"} <= logged  # p is a curve like the losses


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("side", [32, 64, 128])
@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_every_size_and_channel_count_trains_a_few_steps(arch: str, side: int, channels: int) -> None:
    """32, 64 and 128 px, grey and colour: the networks build from the shape (depth from the side, widths capped), and a
    conditional model trains two steps with ADA and the data mirrored, finite throughout."""
    shape = (channels, side, side)
    images = torch.randint(0, 256, (8, *shape), dtype=torch.uint8)
    r = recipe(model=dict(arch=arch, conditional=True, g_width=4, d_width=4, max_channels=16),
               train=dict(epochs=1, batch_size=4, loss="hinge", log_every_steps=1, ema_bn_batches=1),
               reg=dict(ada=True, ada_interval=1, ada_images=8))
    sink = Recorder()
    batches = mirrored(in_memory_batches(images.numpy(), np.arange(8) % 2, 4, seed=0), seed=0)
    train(r, shape, 2, batches, sink)
    assert len(sink.logged) == 2 and all_finite(sink) and sink.sampled[-1][1][1:] == shape
