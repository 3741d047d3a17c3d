"""GPU check: the library's training loop on one CUDA device, in one script of a few minutes (infra/local/gpu-check).

Usage: infra/local/gpu-check [--dry-run] [--steps 100]

Needs PyTorch, numpy, Pillow and pydantic only (the `gan` library's one dependency beside them): it imports nothing
of Ray, Prefect, MLflow or pipelines/, and reads conf/presets/ without PyYAML. Every run is `gan.training_loop.train`
itself, on random images kept on the device (the data path is not what is measured). It prints:
(a) every preset of conf/presets/ trained a few steps on CUDA with the settings a GPU gives its 'auto' (bf16,
    channels_last, step capture, fused Adam): PASS when every loss and weight is finite;
(b) the loop under torch.distributed with NCCL at world size 1, G and D wrapped in DDP as with more workers (the
    library wraps only from two workers up), a counting hook on DDP's gradient all-reduce: PASS when finite and the
    all-reduce ran over NCCL at every backward;
(c) capture == eager: the default model in fp32, a few steps captured and eagerly (cuDNN deterministic), the largest
    weight difference between them beside that of two eager runs;
(d) throughput: fp32 eager, bf16 + channels_last, and + step capture, for the default model (the recommended preset)
    at its batch and at 1024 and for a classic DCGAN-64 (ngf = ndf = 64, 64x64x3) at 512; each row a fixed number of
    timed steps after warm-up between two torch.cuda.synchronize, with the host syncs inside them counted.
--dry-run (automatic without CUDA): the same code paths on the CPU at tiny sizes, a couple of steps each, gloo for NCCL;
its numbers say nothing of a GPU. tests/test_capture.py runs it so that the script cannot rot. Exit 1 on any FAIL.
"""

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the `gan` library, without installing it

from gan import capture, distributed  # noqa: E402
from gan.batches import Batch  # noqa: E402
from gan.config import Recipe  # noqa: E402
from gan.device import for_device  # noqa: E402
from gan.training_loop import train  # noqa: E402

PRESETS = ROOT / "conf" / "presets"
CLASSES = 10
MODES = {  # throughput rows: the train settings each measures
    "fp32 eager": dict(precision="fp32", channels_last=False, capture=False),
    "bf16 + channels_last": dict(precision="bf16", channels_last=True, capture=False),
    "bf16 + channels_last + capture": dict(precision="bf16", channels_last=True, capture=True),
}
# A classic DCGAN for 64x64 RGB (PyTorch's example, ngf = ndf = 64): G 512 -> 256 -> 128 -> 64 channels -> 3, which is
# this library's g_width 32 (G carries g_width x 2^i channels), D 3 -> 64 -> 128 -> 256 -> 512 (d_width 64); the
# non-saturating loss, Adam 2e-4 with beta (0.5, 0.999). (This D has no BatchNorm and ends in a linear layer.)
DCGAN64 = {"model": dict(arch="dcgan", g_width=32, d_width=64, spectral_norm=False, conditional=False),
           "train": dict(loss="ns"), "optim": dict(lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, schedule="constant")}


@dataclass(frozen=True)
class Sizes:
    """How much each part runs: on a GPU, or in the dry run."""

    steps: int  # timed steps per throughput row
    warmup: int  # steps before the timed ones: past each phase's capture (capture.WARMUP eager steps, then the capture)
    preset_steps: int  # steps per preset: the G phase of an n_critic 5 preset is captured at its 4th step, batch 20
    shape: tuple[int, int, int]  # the presets' and the default model's images (MNIST's)
    dcgan_shape: tuple[int, int, int]
    large_batch: int  # the default model's second throughput batch
    dcgan_batch: int
    preset_batch: int | None  # None: each preset's own
    dcgan_widths: tuple[int, int] = (32, 64)


GPU = Sizes(steps=100, warmup=10, preset_steps=24, shape=(1, 28, 28), dcgan_shape=(3, 64, 64), large_batch=1024, dcgan_batch=512, preset_batch=None)
DRY = Sizes(steps=2, warmup=capture.WARMUP + 2, preset_steps=24, shape=(1, 8, 8), dcgan_shape=(3, 16, 16), large_batch=8, dcgan_batch=4,
            preset_batch=4, dcgan_widths=(8, 8))


def read_preset(path: Path) -> dict:
    """A preset file as {section: {key: value}} without PyYAML (which the GPU machine lacks): the presets' subset of YAML,
    sections of `key: value` lines with scalars or [flow, lists], '#' comments. Anything else is an error naming the line
    (tests/test_capture.py keeps this equal to yaml.safe_load on every preset)."""
    sections: dict[str, dict] = {}
    current = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = "" if line.lstrip().startswith("#") else line.split(" #")[0].rstrip()
        if not text.strip():
            continue
        key, sep, value = text.strip().partition(":")
        if not sep or (not line[0].isspace() and value.strip()):
            raise ValueError(f"{path}:{number}: expected 'section:' or an indented 'key: value', got {line!r}")
        if not line[0].isspace():
            current = sections.setdefault(key, {})
        elif current is None:
            raise ValueError(f"{path}:{number}: a key outside any section: {line!r}")
        else:
            current[key.strip()] = scalar(value.strip())
    return sections


def scalar(text: str) -> object:
    """A YAML scalar or flow list of scalars, as PyYAML reads the presets' ones."""
    if text.startswith("[") and text.endswith("]"):
        return [scalar(item.strip()) for item in text[1:-1].split(",") if item.strip()]
    if len(text) >= 2 and text[0] in "'\"" and text[-1] == text[0]:
        return text[1:-1]
    words = {"true": True, "false": False, "null": None, "~": None, "": None}
    if text.lower() in words:
        return words[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def recipe_of(sections: dict, **train: object) -> Recipe:
    """A recipe from config sections (a preset's data section left out: the check brings its own images), trained for one
    epoch, with what the check does not measure turned down."""
    sections = {name: values for name, values in sections.items() if name in Recipe.model_fields}
    quiet = dict(epochs=1, max_minutes=0, fid_every_epochs=0, sample_every_steps=0, num_sample_images=8, ema_bn_batches=1,
                 checkpoint_every_epochs=1, log_every_steps=1_000_000)  # no logging sync inside a timed window
    return Recipe.model_validate({**sections, "train": {**sections.get("train", {}), **quiet, **train}})


def images_on(device: torch.device, shape: tuple[int, ...], rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images [rows, *shape] and labels [rows], on the device."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return (torch.randint(0, 256, (rows, *shape), generator=gen, device=device, dtype=torch.uint8),
            torch.randint(0, CLASSES, (rows,), generator=gen, device=device))


@dataclass
class Clock:
    """Marks the timed steps: after `warm` batches and at the end, each after a synchronize; on CUDA the host syncs in
    between are counted (torch.cuda.set_sync_debug_mode warns of each)."""

    device: torch.device
    warm: int
    seconds: float = math.nan
    started: float = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self.started = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.started


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches_of(data: tuple[torch.Tensor, torch.Tensor], batch: int, steps: int, clock: Clock | None = None) -> Callable[[int], Iterator[Batch]]:
    """`steps` batches of `batch` rows from the data on the device (views of it, in turn: no kernel per batch); the clock
    started before batch `clock.warm` (all steps before it done) and stopped once the last step is."""
    images, labels = data
    per_pool = len(images) // batch

    def epoch_batches(epoch: int) -> Iterator[Batch]:
        for step in range(steps):
            if clock is not None and step == clock.warm:
                clock.start()
            start = step % per_pool * batch
            yield images[start : start + batch], labels[start : start + batch]
        if clock is not None:
            clock.stop()

    return epoch_batches


@dataclass
class Keeper:
    """A sink that keeps the last epoch's metrics and, asked to, its final state."""

    keep_state: bool = False
    metrics: dict = field(default_factory=dict)
    state: dict | None = None

    def log(self, step: int, stats: dict) -> None: ...

    def samples(self, step: int, images: torch.Tensor) -> None: ...

    def epoch_end(self, epoch: int, metrics: dict, state: Callable[[], dict] | None) -> None:
        self.metrics = metrics
        if self.keep_state and state is not None:
            self.state = state()


def run_loop(recipe: Recipe, shape: tuple[int, ...], device: torch.device, steps: int, clock: Clock | None = None,
             keep_state: bool = False, ctx: distributed.WorkerContext | None = None) -> Keeper:
    """`gan.training_loop.train` for `steps` batches of the recipe's batch size, on random images on the device."""
    sink = Keeper(keep_state)
    data = images_on(device, shape, max(4 * recipe.train.batch_size, 256))
    with contextlib.redirect_stdout(io.StringIO()):  # the loop's own lines: the check prints its own
        train(recipe, shape, CLASSES, batches_of(data, recipe.train.batch_size, steps, clock), sink,
              ctx=ctx or distributed.WorkerContext(device=device), steps_per_epoch=steps)
    return sink


def finite(sink: Keeper) -> bool:
    """Every epoch statistic finite, with no watchdog rollback on the way (which would have hidden a NaN)."""
    metrics = sink.metrics
    return bool(metrics) and all(math.isfinite(v) for v in metrics.values()) and not metrics.get("watchdog_rollbacks")


def line(ok: bool, what: str, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {what}: {detail}", flush=True)
    return ok


def checked(what: str, check: Callable[[], bool]) -> bool:
    """A check's PASS/FAIL line; an exception is a FAIL with its last line (the traceback to stderr)."""
    try:
        return check()
    except Exception as err:  # noqa: BLE001 - every failure is reported, the other checks still run
        traceback.print_exc()
        return line(False, what, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


def described(recipe: Recipe, device: torch.device) -> str:
    t = for_device(recipe, device).train
    return f"{t.precision}{', channels_last' if t.channels_last else ''}{', captured' if t.capture else ''}, batch {t.batch_size}"


def presets(device: torch.device, sizes: Sizes) -> bool:
    """(a) Every preset, as a GPU runs its 'auto' settings, step capture included (`train.capture` is off by default)."""
    ok = True
    for path in sorted(PRESETS.glob("*.yaml")):
        def one(path: Path = path) -> bool:
            sections = read_preset(path)
            recipe = recipe_of(sections, capture="auto", **({} if sizes.preset_batch is None else {"batch_size": sizes.preset_batch}))
            sink = run_loop(recipe, sizes.shape, device, sizes.preset_steps)
            losses = " ".join(f"{k} {sink.metrics[k]:.3f}" for k in ("loss_d", "loss_g") if k in sink.metrics)
            return line(finite(sink), f"preset {path.stem}", f"{described(recipe, device)}, {sizes.preset_steps} steps, {losses}")

        ok &= checked(f"preset {path.stem}", one)
    return ok


def ddp_wrap(counter: list[int]) -> Callable[[torch.nn.Module, distributed.WorkerContext], torch.nn.Module]:
    """`distributed.wrap`'s stand-in: DDP at any world size, its gradient all-reduce counted."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook  # noqa: PLC0415
    from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

    def counting(state: object, bucket: torch.distributed.GradBucket) -> torch.futures.Future[torch.Tensor]:  # DDP reads the annotations
        counter[0] += 1
        return allreduce_hook(None, bucket)

    def wrap(module: torch.nn.Module, ctx: distributed.WorkerContext) -> torch.nn.Module:
        ddp = DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        ddp.register_comm_hook(None, counting)
        return ddp

    return wrap


def distributed_check(device: torch.device, sizes: Sizes) -> bool:
    """(b) The loop at world size 1 under a real process group, NCCL on CUDA, G and D in DDP."""
    import torch.distributed as dist  # noqa: PLC0415

    backend = "nccl" if device.type == "cuda" else "gloo"
    steps, allreduces = sizes.warmup, [0]
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group(backend, init_method=f"file://{folder}/store", rank=0, world_size=1,
                                **({"device_id": device} if device.type == "cuda" else {}))
        original = distributed.wrap
        distributed.wrap = ddp_wrap(allreduces)  # the loop looks it up at each call
        try:
            recipe = recipe_of(read_preset(PRESETS / "recommended.yaml"), capture=False, **({} if sizes.preset_batch is None else {"batch_size": sizes.preset_batch}))
            sink = run_loop(recipe, sizes.shape, device, steps, ctx=distributed.WorkerContext(0, 1, device))
        finally:
            distributed.wrap = original
            dist.destroy_process_group()
    ok = finite(sink) and allreduces[0] >= 2 * steps  # D's and G's backward, every step
    return line(ok, "distributed", f"{backend} world size 1, G and D in DDP, {steps} steps, {allreduces[0]} gradient all-reduces, "
                f"{described(recipe, device)}")


def largest_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two final states' weights (G, D) and optimiser moments."""
    diffs = [(a[net][k].float() - b[net][k].float()).abs().max().item() for net in ("G", "D") for k in a[net] if a[net][k].is_floating_point()]
    for opt in ("opt_G", "opt_D"):
        for i, param_state in a[opt]["state"].items():
            diffs += [(v.float() - b[opt]["state"][i][k].float()).abs().max().item() for k, v in param_state.items() if k != "step"]
    return max(diffs)


def capture_check(device: torch.device, sizes: Sizes) -> bool:
    """(c) The default model in fp32, captured and eager, from the same seed: the weights after a few steps."""
    steps = sizes.warmup + 2
    batch = {} if sizes.preset_batch is None else {"batch_size": sizes.preset_batch}
    deterministic = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        states = [run_loop(recipe_of(read_preset(PRESETS / "recommended.yaml"), precision="fp32", capture=c, **batch), sizes.shape, device,
                           steps, keep_state=True).state for c in (False, False, True)]
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic
    floor, captured = largest_difference(states[0], states[1]), largest_difference(states[0], states[2])
    ok = captured <= 1e-5 + 10 * floor  # the learning rate's float32 rounding on CUDA; 0 on a CPU
    return line(ok, "capture == eager", f"default model fp32, {steps} steps: largest |difference| captured vs eager {captured:.3g} "
                f"(eager vs eager {floor:.3g})")


def throughput(device: torch.device, sizes: Sizes) -> bool:
    """(d) The table: img/s of the loop's timed steps per model, batch and mode, and each row's ratio to fp32 eager."""
    recommended = read_preset(PRESETS / "recommended.yaml")
    g_width, d_width = sizes.dcgan_widths
    dcgan = {**DCGAN64, "model": {**DCGAN64["model"], "g_width": g_width, "d_width": d_width}}
    models = [("default (recommended)", recommended, sizes.shape, Recipe.model_validate(recommended).train.batch_size if sizes.preset_batch is None else sizes.preset_batch),
              ("default (recommended)", recommended, sizes.shape, sizes.large_batch),
              ("DCGAN-64 (ngf = ndf = 64)", dcgan, sizes.dcgan_shape, sizes.dcgan_batch)]
    print(f"\n{'model':<28}{'image':>10}{'batch':>7}  {'mode':<32}{'img/s':>10}{'x fp32 eager':>14}{'host syncs':>12}", flush=True)
    ok = True
    for name, sections, shape, batch in models:
        base = None
        for mode, settings in MODES.items():
            def row() -> bool:
                nonlocal base
                clock = Clock(device, sizes.warmup)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    sink = run_loop(recipe_of(sections, batch_size=batch, **settings), shape, device, sizes.warmup + sizes.steps, clock)
                syncs = sum("synchroniz" in str(w.message) for w in caught) if device.type == "cuda" else "n/a"
                rate = sizes.steps * batch / clock.seconds
                base = base or rate
                print(f"{name:<28}{'x'.join(map(str, shape)):>10}{batch:>7}  {mode:<32}{rate:>10.0f}{rate / base:>14.2f}{syncs:>12}", flush=True)
                return finite(sink)

            ok &= checked(f"throughput {name} batch {batch} {mode}", row)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (automatic without CUDA)")
    parser.add_argument("--steps", type=int, default=GPU.steps, help="timed steps per throughput row")
    args = parser.parse_args()
    dry = args.dry_run or not torch.cuda.is_available()
    device = torch.device("cpu") if dry else torch.device("cuda", torch.cuda.current_device())
    sizes = DRY if dry else replace(GPU, steps=args.steps)
    if dry:
        torch.set_num_threads(1)  # tiny tensors: threads only wait for each other, the more so on a busy machine
    started = time.perf_counter()
    where = "dry run on the CPU: tiny sizes, no GPU figures" if dry else torch.cuda.get_device_name(device)
    print(f"gpu-check: {where}; torch {torch.__version__}, Python {sys.version.split()[0]}, pid {os.getpid()}", flush=True)
    results = [
        presets(device, sizes),
        checked("distributed", lambda: distributed_check(device, sizes)),
        checked("capture == eager", lambda: capture_check(device, sizes)),
        throughput(device, sizes),
    ]
    print(f"\n{'all PASS' if all(results) else 'some FAIL'} in {time.perf_counter() - started:.0f} s"
          + (" (dry run: the code paths only)" if dry else ""), flush=True)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
