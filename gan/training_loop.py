"""The per-worker GAN training loop. Runs in one plain process or as one rank of a DDP group.

Each batch walks the phases ('D' every batch, lazy 'Dreg' every r1_every, 'G' every n_critic); the
loss object does the phase's forward and backward, the loop clips, penalises and steps. Tracking
stays outside: numbers, sample images and checkpoint state go to a `Sink`. Beside it: the EMA generator
(`gan.ema`), batches (`gan.batches`), the watchdog (`gan.watchdog`), the stats (`gan.stats`), what the
device makes of the recipe's 'auto' settings (`gan.device`) and the phases' CUDA graphs (`gan.capture`).
"""

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from gan import distributed, optim, watchdog
from gan.ada import ADA
from gan.batches import Batch, to_model_input
from gan.capture import StepGraphs
from gan.choices import check_choices
from gan.config import Recipe, TrainConfig, check_recipe
from gan.device import device_settings, for_device
from gan.ema import EMA, ema_g_steps
from gan.latent import Latent
from gan.loss import GANLoss
from gan.objectives import LOSSES
from gan.recommended import for_data
from gan.regularizers import clip_weights
from gan.sampling import fixed_latents, generate
from gan.state import TrainingState, build_state, d_ratio, warm_start
from gan.stats import LogWindow, epoch_line, epoch_summary

WARM_STEPS = 5  # a time budget's pace is measured past the first epoch's first steps (start-up: allocations, caches)


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


def build_phases(recipe: Recipe, s: TrainingState, after_g: Callable[[], None]) -> list[Phase]:
    """D (every batch), lazy Dreg (R1, when on), G (every n_critic batches, then `after_g`: the EMA update), in that order."""
    o, t = recipe.optim, recipe.train
    clip, lr_d = LOSSES[t.loss].lipschitz == "clip", o.lr_d * d_ratio(recipe)  # lazy R1's correction, 1 without it
    phases = [Phase("D", s.D, s.opt_D, lr_d, 1, s.scaler_D, o.clip_grad_d, o.l1_d, after_step=(lambda: clip_weights(s.D, t.clip_value)) if clip else None)]
    if recipe.reg.r1_gamma > 0:  # L1 and L2 already act on D in its main step: not twice
        phases.append(Phase("Dreg", s.D, s.opt_D, lr_d, recipe.reg.r1_every, s.scaler_D, o.clip_grad_d, weight_decay=False))
    phases.append(Phase("G", s.G, s.opt_G, o.lr_g, t.n_critic, s.scaler_G, o.clip_grad_g, o.l1_g, after_step=after_g))
    return phases


def step_phase(phase: Phase) -> dict[str, torch.Tensor]:
    """After the phase's backward: fp16's unscaling, L1 subgradient, gradient clipping, the step at the learning rate
    set before (skipped by fp16's scaler when a gradient overflowed), the loss scale's update."""
    stats = {}
    phase.scaler.unscale_(phase.opt)
    if phase.l1:
        optim.add_l1_gradient(phase.net, phase.l1)
    if phase.clip_grad:
        norm = optim.clip_gradient(phase.net, phase.clip_grad)
        if phase.scaler.is_enabled():  # fp16: an overflowed step is expected, skipped by the scaler, and logged as 0
            norm = torch.where(norm.isfinite(), norm, torch.zeros_like(norm))
        stats[f"grad_norm_{phase.name.lower()}"] = norm
    with optim.weight_decay_off(phase.opt, not phase.weight_decay):
        phase.scaler.step(phase.opt)
    phase.scaler.update()
    return stats


def phase_step(phase: Phase, loss: GANLoss, real: torch.Tensor, labels: torch.Tensor, draws: dict[str, torch.Tensor],
               progress: float, fresh_gradients: bool = True) -> dict[str, torch.Tensor]:
    """One phase's whole step on a batch: its gradients zeroed, forward and backward, their treatments, the optimiser's
    step; its stats. `fresh_gradients` False zeroes the gradient tensors in place, as a captured step must (the graph
    writes where they are); the values are the same."""
    phase.opt.zero_grad(set_to_none=fresh_gradients)
    stats = loss.accumulate_gradients(phase.name, real, labels, draws, progress)
    return {**stats, **step_phase(phase)}


def train_step(step: int, phases: list[Phase], loss: GANLoss, graphs: StepGraphs | None, recipe: Recipe, real: torch.Tensor,
               labels: torch.Tensor, gen: torch.Generator, progress: float, lr_scale: float) -> dict[str, torch.Tensor]:
    """Batch number `step` (from 0): every phase due at it, in order, each at its scheduled (and rollback-scaled) learning
    rate, with its draws from `gen`, eagerly or replayed from its graph (`graphs`: train.capture), then its after-step
    hook; their stats, still tensors (no host sync)."""
    stats: dict[str, torch.Tensor] = {}
    for phase in (p for p in phases if (step + 1) % p.every == 0):
        optim.set_lr(phase.opt, phase.lr * lr_scale * optim.lr_factor(recipe.optim, progress))
        draws = loss.draw(phase.name, real, labels, gen)
        if graphs is None:
            stats |= phase_step(phase, loss, real, labels, draws, progress)
        else:  # the same step on static buffers: the batch, its labels and the draws are its inputs. Bound now, as the
            # graph is: this phase, its draws' names and the progress (which no capturable step reads: instance noise is refused)
            def body(b: dict[str, torch.Tensor], phase: Phase = phase, names: tuple = tuple(draws), at: float = progress) -> dict[str, torch.Tensor]:
                return phase_step(phase, loss, b["real"], b["labels"], {k: b[k] for k in names}, at, fresh_gradients=False)

            stats |= graphs.run(phase.name, body, {"real": real, "labels": labels, **draws})
        if phase.after_step is not None:
            phase.after_step()
    return stats


def planned_epochs(t: TrainConfig, epochs_done: int, train_seconds: float, per_epoch: float) -> int:
    """A time budget as epochs: those done, then as many more at `per_epoch` seconds as the first epoch that ends past
    the budget would end training at; at most train.epochs."""
    more = math.ceil(max(0.0, 60.0 * t.max_minutes - train_seconds) / max(per_epoch, 1e-9))
    return int(min(t.epochs, epochs_done + more))


def epoch_pace(steps_in_epoch: int, seconds: float, warm: tuple[int, float] | None) -> float:
    """Seconds per epoch at this epoch's pace, its start-up excluded (`warm`: the steps and seconds after WARM_STEPS)."""
    return seconds if not warm or warm[0] <= 0 else warm[1] / warm[0] * steps_in_epoch


def plan_due(s: TrainingState, t: TrainConfig) -> bool:
    """When a time budget is turned into epochs: at the end of the first epoch that checkpoints (so every checkpoint
    holds the plan, and a run resumed from one reads no clock), or earlier once a tenth of the budget is spent."""
    return s.epoch >= min(t.checkpoint_every_epochs, t.epochs) or s.train_seconds >= 6.0 * t.max_minutes


def budget_pace(epoch_log: list[dict], first_pace: float) -> float:
    """Seconds per epoch for a time budget's plan: the mean of the epochs after the first (the first ones run slower:
    start-up, caches, a busy driver; 1,045 img/s against 1,380 later in a default run), or the first epoch's own pace
    past its start-up when it is the only one."""
    later = [e["seconds"] for e in epoch_log[1:]]
    return sum(later) / len(later) if later else first_pace


def schedule_steps(s: TrainingState, t: TrainConfig, steps_in_epoch: int) -> int:
    """How many steps the schedules (learning rate, instance noise) run over: every epoch to be trained, all of
    train.epochs or what the time budget bought."""
    return steps_in_epoch * (s.epochs_planned or t.epochs)


def budget_of(train: dict) -> tuple[int, float]:
    """What a time budget's plan was made for: train.epochs and train.max_minutes."""
    return int(train["epochs"]), float(train["max_minutes"])


def close_epoch(s: TrainingState, t: TrainConfig, ctx: distributed.WorkerContext, window: LogWindow, images_seen: int,
                steps_in_epoch: int, seconds: float, warm: tuple[int, float] | None) -> dict[str, float]:
    """Count the epoch done, on rank 0's clock, which every rank agrees on; turn a time budget into epochs once, when due
    (rank 0's plan, kept in the state: a resumed run reads no clock and stops where an uninterrupted one would); size the
    schedules (before the plan: over train.epochs); the epoch's summary, every stat averaged over the ranks."""
    s.epoch += 1
    per_rank = distributed.gather(images_seen, ctx)
    assert min(per_rank) > 0 and len(set(per_rank)) == 1, f"epoch {s.epoch}: images per rank {per_rank} (a batch larger than a shard?)"
    seconds = distributed.gather(seconds, ctx)[0]
    s.train_seconds += seconds
    s.epoch_log.append({"epoch": s.epoch, "step": s.step, "images": sum(per_rank), "seconds": seconds, "unix": time.time()})
    if t.max_minutes and not s.epochs_planned and plan_due(s, t):
        plan = planned_epochs(t, s.epoch, s.train_seconds, budget_pace(s.epoch_log, epoch_pace(steps_in_epoch, seconds, warm)))
        s.epochs_planned = int(distributed.gather(plan, ctx)[0])
        if ctx.is_main:
            print(f"[train] time budget {t.max_minutes:g} min: {s.epochs_planned} epochs at the pace of "
                  f"{f'epochs 2-{s.epoch}' if s.epoch > 1 else 'the first epoch'}", flush=True)
    s.schedule_steps = schedule_steps(s, t, steps_in_epoch)
    local = window.epoch_means()  # the same names on every rank: they run the same phases
    return epoch_summary(s.epoch, s.step, dict(zip(local, distributed.mean(list(local.values()), ctx))), per_rank, seconds)


def start_state(recipe: Recipe, image_shape: tuple[int, ...], latent: Latent, ctx: distributed.WorkerContext,
                resume: dict | None, init: dict | None) -> TrainingState:
    """A fresh training state, then the checkpoint state resumed, or else the parent's warm-started, if given."""
    s = build_state(recipe, image_shape, latent, ctx.device)
    if resume is not None:
        assert tuple(resume["image_shape"]) == tuple(image_shape), f"checkpoint image shape {resume['image_shape']} != data {image_shape}"
        s.load_state_dict(resume)
        torch.set_rng_state(resume["rng"]["torch"])
        if ctx.is_main:
            print(f"[train] resumed from epoch {s.epoch}, step {s.step}", flush=True)
        if budget_of(json.loads(resume["config_json"])["train"]) != budget_of(recipe.train.model_dump()):
            s.epochs_planned = 0  # epochs or budget raised since: planned again at the end of the next epoch
    elif init is not None:
        assert tuple(init["image_shape"]) == tuple(image_shape), f"parent image shape {init['image_shape']} != data {image_shape}"
        warm_start(s, init, recipe.train.init_optimizer)
        if ctx.is_main:
            carried = "networks and optimisers" if recipe.train.init_optimizer else "networks (fresh optimisers)"
            print(f"[train] warm start from a parent at step {int(init['step'])}: its {carried}; step, schedules and budget from zero", flush=True)
    return s


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
    num_images: int | None = None,
) -> dict[str, float]:
    """Train for `recipe.train.epochs` epochs (or those its time budget buys: `planned_epochs`), resuming from a checkpoint state if given, else
    warm-started from `init` (a parent's checkpoint state: `state.warm_start`) if given.

    `epoch_batches(epoch)` yields that epoch's batches of `config.device_batch` images (train.gpu_batch_size on CUDA
    when set). `steps_per_epoch` sizes the schedules (learning rate, instance noise); by default it is measured in
    the first epoch. `quick_fid(G_ema, latent)` is called on rank 0 every `fid_every_epochs`, and before the first
    step of a warm start (the parent's quality, at 0 s). `nan_at_step`: a drill of the watchdog, D's weights turned NaN
    after that step, once. `num_images`: the training images of all ranks, which the recommended recipe's data-size
    choices read (`gan.recommended.for_data`: reg.ada 'auto').
    """
    check_recipe(recipe, image_shape)
    check_choices(recipe)
    # The recipe as the data and this device run it ('auto' made concrete); the config saved with the checkpoints stays the
    # one given, beside what it became (`choices_json`, `device_json`).
    given, (recipe, reasons) = recipe, for_data(recipe, image_shape, num_images)
    recipe = for_device(recipe, ctx.device, ctx.world_size)
    t, device = recipe.train, ctx.device
    latent = Latent.of(recipe.model, num_classes)
    if ctx.is_main and reasons and resume is None:
        print("\n".join(f"[train] recipe: {line}" for line in reasons), flush=True)
    if ctx.is_main and device.type != "cpu":
        print(f"[train] {json.dumps(device_settings(recipe, device))}", flush=True)
    # 1. The state; DDP in this one block (s.G and s.D stay the plain modules underneath); the EMA, whose horizon goes on
    # over a warm start's parent's (a warm-up from zero would make it forget the parent's average); the watchdog; the
    # optimisers' learning rates as a captured step reads them, and its graphs.
    s = start_state(recipe, image_shape, latent, ctx, resume, init)
    s.schedule_steps = s.schedule_steps or (steps_per_epoch or 0) * t.epochs  # 0: measured in the first epoch
    loss = GANLoss(recipe, latent, distributed.wrap(s.G, ctx), distributed.wrap(s.D, ctx), s.G, s.D, {"G": s.scaler_G, "D": s.scaler_D})
    ema = EMA(s, t, latent, device, offset=0 if init is None else ema_g_steps(init))
    phases, dog = build_phases(recipe, s, ema.update), watchdog.Watchdog(s, t)
    ada = ADA(s, recipe.reg, loss, t.batch_size, ctx) if recipe.reg.ada else None
    for opt in (s.opt_G, s.opt_D):
        optim.capture_ready(opt, device, t.capture)
    graphs = StepGraphs(device) if t.capture else None
    dog.keep()
    z_fixed, c_fixed = (x if x is None else x.to(device) for x in fixed_latents(t.seed, t.num_sample_images, latent))

    def state() -> dict:
        ema.ready()  # its BatchNorm statistics, before the state is read
        return {
            **s.state_dict(), "rng": {"torch": torch.get_rng_state(), "seed": t.seed},
            "config_json": json.dumps(config_snapshot or given.model_dump(mode="json")),
            "device_json": json.dumps(device_settings(recipe, device)), "choices_json": json.dumps(reasons),
            "image_shape": list(image_shape), "num_classes": num_classes, "ema_g_steps": ema.g_steps(),
        }

    def snapshot() -> float:  # rank 0: the quick FID, its own time not training time
        fid = quick_fid(ema.ready(), latent)
        # "seconds": training time; "unix": the wall clock, which a whole run's time to quality is read against.
        s.snapshots.append({"epoch": s.epoch, "step": s.step, "seconds": round(s.train_seconds, 2), "unix": round(time.time(), 2),
                            "fid": fid, "yardstick": getattr(quick_fid, "key", "")})
        return fid

    # 2. Epochs. Latents come from a per-(rank, epoch) generator, so a resumed run redraws the same ones.
    metrics: dict[str, float] = {}
    if init is not None and resume is None and quick_fid is not None and t.fid_every_epochs and ctx.is_main:
        snapshot()  # the parent's quality, at 0 s
    while s.epoch < (s.epochs_planned or t.epochs):
        gen = torch.Generator(device=device).manual_seed(distributed.rank_seed(t.seed, ctx.rank, s.epoch, distributed.LATENTS))
        torch.manual_seed(distributed.rank_seed(t.seed, ctx.rank, s.epoch, distributed.NOISE))  # dropout, augmentation, instance noise
        window, images_seen, steps_in_epoch, started, warm_from = LogWindow(), 0, 0, time.perf_counter(), None
        for images, labels in epoch_batches(s.epoch):
            real, labels = to_model_input(images, device, t.channels_last), labels.to(device, non_blocking=True)
            if ctx.is_main:
                dog.see_real(real)
            progress = min(1.0, s.step / s.schedule_steps) if s.schedule_steps else 0.0
            if ada is not None:
                ada.before_step()
            stats = train_step(s.step, phases, loss, graphs, recipe, real, labels, gen, progress, s.lr_scale)
            window.add(stats if ada is None else {**stats, **ada.after_step(stats)})
            s.step, steps_in_epoch, images_seen = s.step + 1, steps_in_epoch + 1, images_seen + len(real)
            warm_from = time.perf_counter() if steps_in_epoch == WARM_STEPS else warm_from
            if s.step == nan_at_step and not watchdog.rollbacks(s.events):  # the drill fires once per run
                watchdog.inject_nan(s.D)
            if s.step % t.log_every_steps == 0 and ctx.is_main:
                values = window.take()
                s.history.append({"step": s.step, **values})
                sink.log(s.step, values)
            if t.sample_every_steps and s.step % t.sample_every_steps == 0 and ctx.is_main:
                sink.samples(s.step, generate(ema.ready(), z_fixed, c_fixed))

        # 3. Epoch end: the clock and the schedule, the watchdog, the quick FID, samples and the checkpoint.
        if ada is not None:  # an epoch ends an ADA interval: a checkpoint holds p, never half an interval
            window.add(ada.close())
        ended = time.perf_counter()
        warm = None if warm_from is None else (steps_in_epoch - WARM_STEPS, ended - warm_from)
        metrics = close_epoch(s, t, ctx, window, images_seen, steps_in_epoch, ended - started, warm)
        if t.watchdog:  # every rank checks its own numbers; any rank's problem rolls every rank back
            problem = dog.problem(metrics)
            if max(distributed.gather(float(problem is not None), ctx)):
                dog.roll_back(problem or "non-finite numbers on another rank")
                if graphs is not None:
                    graphs.reset()  # the optimisers hold the good state's tensors now: captured again
                continue
            dog.watch_balance(metrics, ctx.is_main)
        last = s.epoch == (s.epochs_planned or t.epochs)
        if quick_fid is not None and t.fid_every_epochs and ctx.is_main and (s.epoch % t.fid_every_epochs == 0 or last):
            metrics["quick_fid"] = snapshot()
            sink.log(s.step, {"quick_fid": metrics["quick_fid"]})
        if ctx.is_main:
            print(epoch_line(s.epochs_planned or t.epochs, metrics, window.epoch_sums), flush=True)
        due = s.epoch % t.checkpoint_every_epochs == 0 or last
        if due and ctx.is_main:
            samples = generate(ema.ready(), z_fixed, c_fixed)
            sink.samples(s.step, samples)
            dog.check_samples(samples)
        if due:
            dog.keep()
        sink.epoch_end(s.epoch, metrics, state if due else None)
    return metrics
