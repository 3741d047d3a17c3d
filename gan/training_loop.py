"""The per-worker GAN training loop. Runs in one plain process or as one rank of a DDP group.

Each batch walks the phases ('D' every batch, lazy 'Dreg' every r1_every, 'G' every n_critic); the
loss object does the phase's forward and backward, the loop clips, penalises and steps. Tracking
stays outside: numbers, sample images and checkpoint state go to a `Sink`.
"""

import copy
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from gan import distributed, optim, watchdog
from gan.config import Recipe, TrainConfig, check_recipe
from gan.latent import Latent
from gan.loss import GANLoss
from gan.objectives import LOSSES
from gan.regularizers import clip_weights
from gan.sampling import generate
from gan.state import TrainingState, build_state, warm_start

Batch = tuple[torch.Tensor, torch.Tensor]  # images [N, C, H, W] (uint8, or float for vector data), labels [N] int64
BN_BATCH = 256  # latents per batch when recomputing the EMA generator's BatchNorm statistics


class Sink(Protocol):
    """Where the loop's outputs go. Every rank calls `epoch_end` once per epoch (Ray Train needs that)."""

    def log(self, step: int, stats: dict[str, float]) -> None: ...

    def samples(self, step: int, images: torch.Tensor) -> None: ...

    def epoch_end(self, epoch: int, metrics: dict[str, float], state: Callable[[], dict] | None) -> None: ...


@dataclass
class Phase:
    """One optimisation phase: which network and optimiser, how often, and what happens around its step."""

    name: str
    net: nn.Module
    opt: torch.optim.Optimizer
    lr: float
    every: int
    scaler: torch.amp.GradScaler
    clip_grad: float = 0.0
    l1: float = 0.0
    weight_decay: bool = True  # the optimiser's coupled L2 term; off for a second step of the same network
    after_step: Callable[[], None] | None = None


def build_phases(recipe: Recipe, s: TrainingState, ema_offset: int = 0) -> list[Phase]:
    """D (every batch), lazy Dreg (R1, when on), G (every n_critic batches, then the EMA update), in that order.
    `ema_offset`: G steps the EMA's warm-up counts before this run's own (a warm start's parent's)."""
    o, t = recipe.optim, recipe.train
    clip = LOSSES[t.loss].lipschitz == "clip"
    phases = [Phase("D", s.D, s.opt_D, o.lr_d, 1, s.scaler_D, o.clip_grad_d, o.l1_d, after_step=(lambda: clip_weights(s.D, t.clip_value)) if clip else None)]
    if recipe.reg.r1_gamma > 0:  # L1 and L2 already act on D in its main step: not twice
        phases.append(Phase("Dreg", s.D, s.opt_D, o.lr_d, recipe.reg.r1_every, s.scaler_D, o.clip_grad_d, weight_decay=False))

    def ema() -> None:
        update_ema(s.G_ema, s.G, ema_beta(t.ema_decay, ema_offset + (s.step + 1) // t.n_critic, t.ema_warmup))

    phases.append(Phase("G", s.G, s.opt_G, o.lr_g, t.n_critic, s.scaler_G, o.clip_grad_g, o.l1_g, after_step=ema))
    return phases


def step_phase(phase: Phase, recipe: Recipe, progress: float, lr_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """After the phase's backward: fp16's unscaling, L1 subgradient, gradient clipping, scheduled (and rollback-scaled)
    learning rate, the step (skipped by fp16's scaler when a gradient overflowed), the loss scale's update."""
    stats = {}
    phase.scaler.unscale_(phase.opt)
    if phase.l1:
        optim.add_l1_gradient(phase.net, phase.l1)
    if phase.clip_grad:
        norm = optim.clip_gradient(phase.net, phase.clip_grad)
        if phase.scaler.is_enabled():  # fp16: an overflowed step is expected, skipped by the scaler, and logged as 0
            norm = torch.where(norm.isfinite(), norm, torch.zeros_like(norm))
        stats[f"grad_norm_{phase.name.lower()}"] = norm
    optim.set_lr(phase.opt, phase.lr * lr_scale * optim.lr_factor(recipe.optim, progress))
    with optim.weight_decay_off(phase.opt, not phase.weight_decay):
        phase.scaler.step(phase.opt)
    phase.scaler.update()
    if phase.after_step is not None:
        phase.after_step()
    return stats


def ema_g_steps(parent: dict) -> int:
    """The G steps a parent checkpoint state's EMA generator has averaged over: its own, and its own parents' (recorded
    since warm starts were); the EMA warm-up of a run warm-started from it goes on from there."""
    return int(parent.get("ema_g_steps", int(parent["step"]) // json.loads(parent["config_json"])["train"]["n_critic"]))


def ema_beta(decay: float, g_step: int, warmup: int = 10) -> float:
    """EMA decay ramped up over the first G steps, so the average does not remember the random init."""
    return min(decay, (1 + g_step) / (warmup + g_step))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """Average the weights only: BatchNorm statistics belong to weights, see `recompute_bn_stats`."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p, 1.0 - beta)


@torch.no_grad()
def recompute_bn_stats(G: nn.Module, latent: Latent, batches: int, seed: int, device: torch.device) -> None:
    """Re-estimate every BatchNorm's running statistics for G's own weights from fresh latents.

    The EMA generator's weights are an average no training batch ever ran through; the statistics of
    the live G belong to other weights. Seeded, so a resumed run recomputes the same numbers.
    """
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    gen = torch.Generator().manual_seed(seed)
    G.train()
    for _ in range(batches):
        z, c = latent.sample(BN_BATCH, gen)
        G(z.to(device), None if c is None else c.to(device))
    G.eval()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def fixed_latents(seed: int, count: int, latent: Latent) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latent batch every sample grid is drawn from, the same on every rank and every resume.

    Conditional and InfoGAN models show every class (or categorical code), in order."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(count) * max(latent.num_classes or latent.info_categorical, 1) // count  # every class, in order
    noise = torch.randn(count, latent.z_dim, generator=gen)
    cont = torch.rand(count, latent.info_continuous, generator=gen) * 2 - 1
    return latent.with_codes(noise, rows, cont), (rows if latent.num_classes else None)


def in_memory_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, rank: int = 0) -> Callable[[int], Iterable[Batch]]:
    """Batches of an array [N, ...] and its labels [N], reshuffled each epoch; for single-process runs and tests."""
    data, targets = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def epoch_batches(epoch: int) -> Iterable[Batch]:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(distributed.rank_seed(seed, rank, epoch, distributed.DATA)))
        for start in range(0, len(data) - batch_size + 1, batch_size):  # drop the last, short batch
            rows = order[start : start + batch_size]
            yield data[rows], targets[rows]

    return epoch_batches


def to_model_input(images: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """uint8 images -> floats in [0, 1] on the device (copied from pinned memory without a host sync on GPUs);
    float data (e.g. 2-D points) as it is."""
    if device.type == "cuda":
        images = images.pin_memory()
    x = images.to(device, non_blocking=True)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def epoch_summary(epoch: int, step: int, sums: dict, counts: dict, per_rank: list[float], seconds: float) -> dict[str, float]:
    """Mean of every stat over the steps that produced it, overall throughput and every rank's image count."""
    return {
        "epoch": epoch, "step": step, "images_per_sec": sum(per_rank) / max(seconds, 1e-9),
        **{k: float(v) / counts[k] for k, v in sums.items()},
        **{f"images_rank{r}": n for r, n in enumerate(per_rank)},
    }


def epoch_line(epochs: int, metrics: dict[str, float], stat_names: Iterable[str]) -> str:
    stats = " ".join(f"{k} {metrics[k]:.3f}" for k in stat_names)
    return f"[train] epoch {metrics['epoch']}/{epochs} step {metrics['step']} {stats} {metrics['images_per_sec']:.0f} img/s"


def schedule_steps(s: TrainingState, t: TrainConfig, steps_in_epoch: int) -> int:
    """After an epoch: how many steps the schedules (learning rate, instance noise) run over. All epochs by
    default; with a time budget, the steps that fit it at the mean pace so far (rank 0's clock, equal on every
    rank), re-estimated every epoch so that a slow first epoch does not end the schedule early."""
    total = steps_in_epoch * t.epochs
    if not t.max_minutes:
        return total
    per_step = s.train_seconds / max(s.step, 1)
    return max(s.step, min(total, s.step + int(max(0.0, 60.0 * t.max_minutes - s.train_seconds) / max(per_step, 1e-9))))


def roll_back(s: TrainingState, good: dict, problem: str, t: TrainConfig) -> None:
    """Restore the last good state with halved learning rates, keeping the clock, the epoch log and the events."""
    done = watchdog.rollbacks(s.events)
    if done >= t.max_rollbacks:
        raise watchdog.TrainingDiverged(
            f"training diverged at step {s.step} (epoch {s.epoch}): {problem}; still after {done} rollbacks with halved "
            "learning rates (train.max_rollbacks)"
        )
    kept = s.train_seconds, s.epoch_log, s.history, s.lr_scale * 0.5
    event = {"epoch": s.epoch, "step": s.step, "kind": watchdog.ROLLBACK, "detail": f"{problem}; back to epoch {good['epoch']}, learning rates x{kept[3]:g}"}
    events = [*s.events, event]
    s.load_state_dict(good)
    s.train_seconds, s.epoch_log, s.history, s.lr_scale = kept
    s.events = events
    s.history.append({"step": s.step, "watchdog_rollbacks": float(done + 1)})
    print(f"[watchdog] step {event['step']}: {event['detail']}", flush=True)


def check_samples(s: TrainingState, t: TrainConfig, samples: torch.Tensor, reference: float | None) -> None:
    """Rank 0, at checkpoints: the fixed-latent samples' diversity against the real images'; collapse is an event."""
    if not (t.watchdog and t.collapse_ratio and reference and len(samples) > 1 and s.step >= t.collapse_min_steps):
        return
    ratio = watchdog.diversity(samples) / reference
    s.history.append({"step": s.step, "sample_diversity_ratio": ratio})
    collapsed = ratio < t.collapse_ratio
    if collapsed or watchdog.verdict(s.events):  # a collapse, or the first healthy check after one
        detail = f"sample diversity {ratio:.3f} x the real images' (train.collapse_ratio {t.collapse_ratio})"
        s.events.append({"epoch": s.epoch, "step": s.step, "kind": watchdog.COLLAPSE if collapsed else watchdog.CLEARED, "detail": detail})
        print(f"[watchdog] epoch {s.epoch}: {'samples collapsed' if collapsed else 'collapse cleared'}: {detail}", flush=True)


class LogWindow:
    """Per-step stats as tensors (no device sync per step), averaged over the epoch and over each log interval."""

    def __init__(self) -> None:
        self.epoch_sums, self.epoch_counts = defaultdict(float), defaultdict(int)
        self.sums, self.counts = defaultdict(float), defaultdict(int)

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            self.epoch_sums[k], self.epoch_counts[k] = self.epoch_sums[k] + v, self.epoch_counts[k] + 1
            self.sums[k], self.counts[k] = self.sums[k] + v, self.counts[k] + 1

    def take(self) -> dict[str, float]:
        """Means since the last call: a stat of a phase that runs every k steps still appears at every log step."""
        means = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = defaultdict(float), defaultdict(int)
        return means


def train(
    recipe: Recipe,
    image_shape: tuple[int, ...],
    num_classes: int,
    epoch_batches: Callable[[int], Iterable[Batch]],
    sink: Sink,
    ctx: distributed.WorkerContext = distributed.WorkerContext(),
    resume: dict | None = None,
    config_snapshot: dict | None = None,
    steps_per_epoch: int | None = None,
    quick_fid: Callable[[nn.Module, Latent], float] | None = None,
    init: dict | None = None,
    nan_at_step: int | None = None,
) -> dict[str, float]:
    """Train for `recipe.train.epochs` epochs (or its time budget), resuming from a checkpoint state if given, else
    warm-started from `init` (a parent's checkpoint state: `state.warm_start`) if given.

    `steps_per_epoch` sizes the schedules (learning rate, instance noise); by default it is measured in
    the first epoch. `quick_fid(G_ema, latent)` is called on rank 0 every `fid_every_epochs`, and before the first
    step of a warm start (the parent's quality, at 0 s). `nan_at_step`: a drill of the watchdog, D's weights turned NaN
    after that step, once.
    """
    check_recipe(recipe, image_shape)
    t, device = recipe.train, ctx.device
    latent = Latent.of(recipe.model, num_classes)
    # 1. The state, then the resumed state if any.
    s = build_state(recipe, image_shape, latent, device)
    if resume is not None:
        assert tuple(resume["image_shape"]) == tuple(image_shape), f"checkpoint image shape {resume['image_shape']} != data {image_shape}"
        s.load_state_dict(resume)
        torch.set_rng_state(resume["rng"]["torch"])
        if ctx.is_main:
            print(f"[train] resumed from epoch {s.epoch}, step {s.step}", flush=True)
    elif init is not None:  # (on a resume, `init` still sets the EMA's horizon below)
        assert tuple(init["image_shape"]) == tuple(image_shape), f"parent image shape {init['image_shape']} != data {image_shape}"
        warm_start(s, init, t.init_optimizer)
        if ctx.is_main:
            carried = "networks and optimisers" if t.init_optimizer else "networks (fresh optimisers)"
            print(f"[train] warm start from a parent at step {int(init['step'])}: its {carried}; step, schedules and budget from zero", flush=True)
    s.schedule_steps = s.schedule_steps or (steps_per_epoch or 0) * t.epochs  # 0: measured in the first epoch

    # 2. DDP, in this one block; s.G and s.D stay the plain modules underneath.
    loss = GANLoss(recipe, latent, distributed.wrap(s.G, ctx), distributed.wrap(s.D, ctx), s.G, s.D, {"G": s.scaler_G, "D": s.scaler_D})
    # A warm start's EMA generator goes on averaging over its parent's horizon: a warm-up from zero would make it follow
    # the live G step for step at first, forgetting the parent's average (the schedules do start again).
    ema_offset = 0 if init is None else ema_g_steps(init)
    phases = build_phases(recipe, s, ema_offset)
    z_fixed, c_fixed = (x if x is None else x.to(device) for x in fixed_latents(t.seed, t.num_sample_images, latent))
    ema_at = [-1]
    # The watchdog's memory: the last good state (rolled back to on non-finite numbers), the real images' diversity.
    good, real_diversity, d_wins_streak = copy.deepcopy(s.state_dict()), None, 0

    def ema_ready() -> nn.Module:
        """The EMA generator with BatchNorm statistics for its current weights (recomputed once per step at most)."""
        if ema_at[0] != s.step:
            recompute_bn_stats(s.G_ema, latent, t.ema_bn_batches, distributed.rank_seed(t.seed, 0, s.step, distributed.BATCHNORM), device)
            ema_at[0] = s.step
        return s.G_ema

    def state() -> dict:
        ema_ready()
        return {
            **s.state_dict(), "rng": {"torch": torch.get_rng_state(), "seed": t.seed},
            "config_json": json.dumps(config_snapshot or recipe.model_dump(mode="json")),
            "image_shape": list(image_shape), "num_classes": num_classes, "ema_g_steps": ema_offset + s.step // t.n_critic,
        }

    # 3. Epochs. Latents come from a per-(rank, epoch) generator, so a resumed run redraws the same ones.
    metrics: dict[str, float] = {}
    if init is not None and resume is None and quick_fid is not None and t.fid_every_epochs and ctx.is_main:
        s.snapshots.append({"epoch": 0, "step": 0, "seconds": 0.0, "fid": quick_fid(ema_ready(), latent), "yardstick": getattr(quick_fid, "key", "")})
    budget = 60.0 * t.max_minutes
    while s.epoch < t.epochs and not (budget and s.train_seconds >= budget):
        gen = torch.Generator(device=device).manual_seed(distributed.rank_seed(t.seed, ctx.rank, s.epoch, distributed.LATENTS))
        torch.manual_seed(distributed.rank_seed(t.seed, ctx.rank, s.epoch, distributed.NOISE))  # dropout, augmentation, instance noise
        window, images_seen, steps_in_epoch, started = LogWindow(), 0, 0, time.perf_counter()
        for images, labels in epoch_batches(s.epoch):
            real, labels = to_model_input(images, device, t.channels_last), labels.to(device, non_blocking=True)
            if real_diversity is None and ctx.is_main and len(real) > 1:
                real_diversity = watchdog.diversity(real[: t.num_sample_images])
            progress = min(1.0, s.step / s.schedule_steps) if s.schedule_steps else 0.0
            for phase in (p for p in phases if (s.step + 1) % p.every == 0):
                phase.opt.zero_grad(set_to_none=True)
                window.add(loss.accumulate_gradients(phase.name, real, labels, gen, progress))
                window.add(step_phase(phase, recipe, progress, s.lr_scale))
            s.step, steps_in_epoch, images_seen = s.step + 1, steps_in_epoch + 1, images_seen + len(real)
            if s.step == nan_at_step and not watchdog.rollbacks(s.events):  # the drill fires once per run
                watchdog.inject_nan(s.D)
            if s.step % t.log_every_steps == 0 and ctx.is_main:
                values = window.take()
                s.history.append({"step": s.step, **values})
                sink.log(s.step, values)
            if t.sample_every_steps and s.step % t.sample_every_steps == 0 and ctx.is_main:
                sink.samples(s.step, generate(ema_ready(), z_fixed, c_fixed))

        # 4. Epoch end: every rank agrees on rank 0's clock (it decides the time budget and its schedule).
        s.epoch += 1
        per_rank = distributed.gather(images_seen, ctx)
        assert min(per_rank) > 0, f"a rank saw no data in epoch {s.epoch}: images per rank {per_rank} (batch larger than a shard?)"
        seconds = distributed.gather(time.perf_counter() - started, ctx)[0]
        s.train_seconds += seconds
        s.epoch_log.append({"epoch": s.epoch, "step": s.step, "images": sum(per_rank), "seconds": seconds, "unix": time.time()})
        s.schedule_steps = schedule_steps(s, t, steps_in_epoch)
        metrics = epoch_summary(s.epoch, s.step, window.epoch_sums, window.epoch_counts, per_rank, seconds)
        if t.watchdog:  # every rank checks its own numbers; any rank's problem rolls every rank back
            problem = watchdog.nonfinite(metrics, {"G": s.G, "D": s.D})
            if max(distributed.gather(float(problem is not None), ctx)):
                roll_back(s, good, problem or "non-finite numbers on another rank", t)
                continue
            d_wins_streak = d_wins_streak + 1 if watchdog.d_wins(t, metrics) else 0
            if d_wins_streak == t.d_wins_epochs and ctx.is_main:
                detail = f"D(x) {metrics['d_real']:.3f}, D(G(z)) {metrics['d_fake']:.3f} for {d_wins_streak} epochs"
                s.events.append({"epoch": s.epoch, "step": s.step, "kind": watchdog.D_WINS, "detail": detail})
                print(f"[watchdog] epoch {s.epoch}: the discriminator wins outright: {detail}", flush=True)
            metrics["watchdog_rollbacks"] = float(watchdog.rollbacks(s.events))
        last = s.epoch == t.epochs or bool(budget and s.train_seconds >= budget)
        if quick_fid is not None and t.fid_every_epochs and ctx.is_main and (s.epoch % t.fid_every_epochs == 0 or last):
            fid = quick_fid(ema_ready(), latent)  # its own time is not training time
            s.snapshots.append({"epoch": s.epoch, "step": s.step, "seconds": round(s.train_seconds, 2), "fid": fid,
                                "yardstick": getattr(quick_fid, "key", "")})
            sink.log(s.step, {"quick_fid": fid})
            metrics["quick_fid"] = fid
        if ctx.is_main:
            print(epoch_line(t.epochs, metrics, window.epoch_sums) + (f" quick FID {metrics['quick_fid']:.2f}" if "quick_fid" in metrics else ""), flush=True)
        due = s.epoch % t.checkpoint_every_epochs == 0 or last
        if due and ctx.is_main:
            samples = generate(ema_ready(), z_fixed, c_fixed)
            sink.samples(s.step, samples)
            check_samples(s, t, samples, real_diversity)
        if due:
            good = copy.deepcopy(s.state_dict())
        sink.epoch_end(s.epoch, metrics, state if due else None)
    return metrics
