"""DDP without Ray: two gloo processes, each on its own slice of the digits, end every recipe with
identical G and D weights that moved away from the initial ones."""

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gan.config import Recipe
from gan.distributed import WorkerContext
from gan.latent import Latent
from gan.state import build_state
from gan.batches import in_memory_batches
from gan.training_loop import train
from tests.test_training_loop import SHAPE, Recorder, digits, recipe

WORLD, SHARD, BATCH = 2, 64, 16  # 4 steps per rank and recipe
RECIPES = {
    "minimax": dict(train=dict(loss="minimax")),
    "ns": dict(train=dict(loss="ns")),
    "hinge+sn": dict(train=dict(loss="hinge"), model=dict(spectral_norm=True)),
    "lsgan": dict(train=dict(loss="lsgan")),
    "wgan": dict(train=dict(loss="wgan")),
    "wgan-gp": dict(train=dict(loss="wgan-gp")),
    "r1": dict(reg=dict(r1_gamma=1.0, r1_every=2)),
    "conditional-resnet": dict(model=dict(arch="resnet", conditional=True, g_width=4, d_width=4), reg=dict(r1_gamma=1.0, r1_every=2)),
    "infogan": dict(model=dict(info_categorical=10, info_continuous=2), reg=dict(r1_gamma=1.0, r1_every=2)),
    "tricks": dict(  # per-rank randomness (dropout, augmentation, noise) and per-step gradient treatments
        model=dict(d_dropout=0.2), train=dict(n_critic=2),
        reg=dict(feature_matching=1.0, instance_noise=0.1, diffaugment="translation,cutout"),
        optim=dict(clip_grad_d=1.0, l1_g=1e-4, weight_decay_d=1e-4, schedule="cosine"),
    ),
}
# The live G's BatchNorm statistics are per rank by design (DDP broadcasts rank 0's before each G forward,
# then each rank's own batch updates them); nothing evaluates them: G_ema's are recomputed, equally on every rank.
PER_RANK = ("running_mean", "running_var", "num_batches_tracked")


def tiny(name: str) -> Recipe:
    overrides = RECIPES[name]
    return recipe(**{**overrides, "train": dict(epochs=1, batch_size=BATCH, **overrides.get("train", {}))})


def shard(rank: int) -> tuple[np.ndarray, np.ndarray]:
    return digits(slice(rank * SHARD, (rank + 1) * SHARD))


def worker(rank: int, init_method: str, out: str) -> None:
    """One rank: every recipe in turn on this rank's shard, saving its final G, D and G_ema."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        images, labels = shard(rank)
        for name in RECIPES:
            sink = Recorder()
            train(tiny(name), SHAPE, 10, in_memory_batches(images, labels, BATCH, seed=0, rank=rank), sink, ctx=WorkerContext(rank, WORLD))
            state = sink.states[-1]
            torch.save({**{k: state[k] for k in ("G", "D", "G_ema")}, "metrics": sink.epochs[-1]}, Path(out) / f"{name}-{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def initial() -> dict[str, dict]:
    """Every recipe's initial G and D, as each rank builds them (seeded)."""
    states = {}
    for name in RECIPES:
        r = tiny(name)
        s = build_state(r, SHAPE, Latent.of(r.model, 10), torch.device("cpu"))
        states[name] = {"G": dict(s.G.named_parameters()), "D": dict(s.D.named_parameters())}
    return states


@pytest.fixture(scope="module")
def trained(initial: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both ranks train every recipe, in one group of processes. Forked, not spawned: the children inherit
    torch, gan and the digits already imported here (after `initial`: building an optimiser imports torch._dynamo),
    which saves them ~10 s of imports."""
    out = tmp_path_factory.mktemp("ddp")
    shard(0)  # imports scikit-learn here, once for both children
    mp.start_processes(worker, args=(f"file://{out / 'rendezvous'}", str(out)), nprocs=WORLD, join=True, start_method="fork")
    return out


def test_ranks_see_different_data() -> None:
    (a, _), (b, _) = shard(0), shard(1)
    assert (a != b).any()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(RECIPES))
def test_ranks_end_with_identical_weights_that_moved(initial: dict, trained: Path, name: str) -> None:
    ranks = [torch.load(trained / f"{name}-{rank}.pt", weights_only=True) for rank in range(WORLD)]
    for key in ("G", "D", "G_ema"):
        for k, tensor in ranks[0][key].items():
            if key == "G" and k.endswith(PER_RANK):
                continue
            assert torch.equal(tensor, ranks[1][key][k]), f"{name}: {key}.{k} differs between ranks"
    # Critic losses (and hinge inside its margins) are mean(fake) - mean(real) in the logits: D's output bias cancels.
    may_stay = {"linear.bias"} if tiny(name).train.loss in ("hinge", "wgan", "wgan-gp") else set()
    for key in ("G", "D"):
        stayed = {k for k, p in initial[name][key].items() if torch.equal(p.detach(), ranks[0][key][k])}
        assert stayed <= (may_stay if key == "D" else set()), f"{name}: {key} parameters that never moved: {sorted(stayed)}"


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_rank_reports_the_epochs_stats_averaged_over_the_ranks(trained: Path, name: str) -> None:
    """Each rank trains on its own shard, so its own losses differ; the epoch's numbers (printed, reported, read by the
    watchdog) are the mean over the ranks, the same on every rank."""
    metrics = [torch.load(trained / f"{name}-{rank}.pt", weights_only=True)["metrics"] for rank in range(WORLD)]
    assert metrics[0] == metrics[1] and {"loss_d", "loss_g"} <= metrics[0].keys(), name
