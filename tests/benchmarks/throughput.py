"""Benchmark: training throughput of one recipe, from a bare loop to Ray Train with N workers, side by side.

Usage: .venv/bin/python tests/benchmarks/throughput.py [--presets recommended,article-mlp] [--seconds 60] [--workers 2] [--repeat 3]
       [--set ray.dashboard=true] (settings for the ray rows)

For each preset, on the bundled MNIST training split, one after another on the same machine:
- `bare`: a plain PyTorch loop written out here: the same networks, objective, optimiser, global batch
  and EMA update, random batches from a tensor in memory, every core as torch threads; nothing else;
- `loop`: the pipeline's training function (`gan.training_loop.train`) in this process, no Ray;
- `ray-1`: the train stage as `gan-pipeline run` runs it (`pipelines.stages.train.train`: TorchTrainer, Ray
  Data shard, checkpoints, samples) with conf/pipeline.yaml's settings and 1 worker;
- `ray-N`: the same with N workers (DDP over gloo), the global batch kept: batch_size / N per worker.
Steady state leaves out the first epoch (`bare`: the first 20 steps): images over the wall clock
between the end of the first epoch and the end of the last, so checkpoints, sample grids and Ray
Train's reports between epochs count. Quick FIDs are off (evaluation, not training). With `--repeat R` the rows run
R times in turn (bare, loop, ray-1, ray-N, bare, ...), each ratio taken to its own repeat's `bare`: the table gives the
median and the range of the R ratios. Prints one table per preset, and the JSON of all rows last.
"""

import argparse
import copy
import json
import os
import statistics
import threading
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gan import checkpoint as ckpt
from gan.config import Recipe
from gan.latent import Latent
from gan.networks import build_discriminator, build_generator
from gan.objectives import LOSSES
from gan.batches import in_memory_batches
from gan.training_loop import train

ROOT = Path(__file__).resolve().parents[2]
WARMUP_STEPS = 20


def bare_loop(recipe: Recipe, images: np.ndarray, labels: np.ndarray, classes: int, seconds: float) -> float:
    """Images per second of the recipe's arithmetic and nothing else, after WARMUP_STEPS steps."""
    m, t, o = recipe.model, recipe.train, recipe.optim
    assert t.n_critic == 1 and not (recipe.reg.r1_gamma or recipe.reg.diffaugment or recipe.reg.feature_matching), "bare loop: plain recipes only"
    assert o.optimizer == "adam" and not (o.weight_decay_g or o.weight_decay_d or o.clip_grad_d or o.clip_grad_g), "bare loop: plain Adam only"
    torch.manual_seed(t.seed)
    latent, shape = Latent.of(m, classes), tuple(images.shape[1:])
    G, D = build_generator(m, shape, latent), build_discriminator(m, shape, latent)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    opt_G = torch.optim.Adam(G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2))
    opt_D = torch.optim.Adam(D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2))
    objective, n = LOSSES[t.loss], t.batch_size
    data, targets = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    steps, started = 0, 0.0
    while True:
        rows = torch.randint(len(data), (n,))
        real, c_real = data[rows].float().div_(255.0), targets[rows]
        # D step on real and fake in one forward, then G step through the frozen D.
        z, c = latent.sample(n, labels=c_real)
        with torch.no_grad():
            fake = G(z, c)
        logits = D(torch.cat([real, fake]), None if c is None else torch.cat([c_real, c])).logits
        opt_D.zero_grad(set_to_none=True)
        objective.d_loss(*logits.split([n, n]), 0.0).backward()
        opt_D.step()
        z, c = latent.sample(n, labels=c_real)
        D.requires_grad_(False)
        opt_G.zero_grad(set_to_none=True)
        objective.g_loss(D(G(z, c), c).logits).backward()
        D.requires_grad_(True)
        opt_G.step()
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p, 1.0 - t.ema_decay)
        steps += 1
        if steps == WARMUP_STEPS:
            started = time.perf_counter()
        elif steps > WARMUP_STEPS and time.perf_counter() - started >= seconds:
            return (steps - WARMUP_STEPS) * n / (time.perf_counter() - started)


def steady(epoch_log: list[dict]) -> tuple[float, int]:
    """(images per second from the end of the first epoch to the end of the last, epochs counted)."""
    assert len(epoch_log) >= 3, f"too few epochs for a steady-state figure: {len(epoch_log)}; raise --seconds"
    later = epoch_log[1:]
    return sum(e["images"] for e in later[1:]) / (later[-1]["unix"] - later[0]["unix"]), len(later) - 1


class EpochLog:
    """A sink that keeps only the last epoch's log (the loop's checkpoint state carries it)."""

    epochs: list[dict] = []

    def log(self, step: int, stats: dict) -> None: ...

    def samples(self, step: int, images: torch.Tensor) -> None: ...

    def epoch_end(self, epoch: int, metrics: dict, state) -> None:  # noqa: ANN001
        if state is not None:
            self.epochs = json.loads(state()["epoch_log_json"])


def loop_in_process(recipe: Recipe, images: np.ndarray, labels: np.ndarray, classes: int, seconds: float) -> tuple[float, int]:
    recipe = recipe.model_copy(deep=True)
    recipe.train.epochs, recipe.train.max_minutes = 100_000, seconds / 60
    sink = EpochLog()
    train(recipe, tuple(images.shape[1:]), classes, in_memory_batches(images, labels, recipe.train.batch_size, recipe.train.seed), sink,
          steps_per_epoch=len(images) // recipe.train.batch_size)
    return steady(sink.epochs)


class CpuShares(threading.Thread):
    """Every process's CPU time, read from /proc every second while a row runs: afterwards, each process's share of a core
    over a window (the steady state), by its name (Ray names its processes: raylet, gcs_server, ray::TrainController...)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            self.samples.append((time.time(), cpu_seconds()))

    def shares(self, start: float, end: float) -> dict[str, float]:
        """Each named process's CPU seconds per wall second between the first sample after `start` and the last before `end`."""
        inside = [(t, s) for t, s in self.samples if start <= t <= end]
        assert len(inside) >= 2, f"{len(inside)} CPU samples in the steady state"
        (t0, first), (t1, last) = inside[0], inside[-1]
        named: dict[str, float] = {}
        for pid, (name, cpu) in last.items():
            named[name] = named.get(name, 0.0) + (cpu - first.get(pid, (name, 0.0))[1]) / (t1 - t0)
        return dict(sorted(((n, v) for n, v in named.items() if v >= 0.005), key=lambda kv: -kv[1]))


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """pid -> (its name: the command line's first words, as Ray retitles its processes; user + system CPU seconds)."""
    ticks, out = os.sysconf("SC_CLK_TCK"), {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            words = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            continue
        name = " ".join(Path(w).name if i == 0 else w for i, w in enumerate(words[:2]))[:60] or "kernel"
        out[int(proc.name)] = (name, (int(stat[11]) + int(stat[12])) / ticks)
    return out


def ray_train(preset: str, workers: int, seconds: float, workdir: Path, shares: list[dict] | None = None,
              extra: tuple[str, ...] = ()) -> tuple[float, int]:
    """The train stage as the pipeline runs it, with conf/pipeline.yaml, the preset, and `workers` workers; with `shares`,
    every process's share of a core during the steady state is added to it."""
    from pipelines.config import load_config, preset_path  # noqa: PLC0415
    from pipelines.stages.ingest import ingest  # noqa: PLC0415
    from pipelines.stages.train import train as train_stage  # noqa: PLC0415

    base = load_config([ROOT / "conf" / "pipeline.yaml", preset_path(preset)])
    cfg = load_config([ROOT / "conf" / "pipeline.yaml", preset_path(preset)], [
        f"runtime.workdir={workdir}", f"ray.num_workers={workers}", f"train.batch_size={base.train.batch_size // workers}",
        f"ray.cpus_per_worker={min(base.ray.cpus_per_worker, ((os.cpu_count() or 1) - 1) / workers)}",  # as a run with ray.loader ray-data
        f"train.max_minutes={seconds / 60}", "train.epochs=100000", "train.fid_every_epochs=0", f"train.seed={time.time_ns() % 10**6}",
        *extra,
    ])
    sampler = CpuShares()
    sampler.start()
    try:
        out = train_stage(cfg, ingest(cfg))
    finally:
        sampler.done.set()
    epoch_log = json.loads(ckpt.load(Path(out["checkpoint"]))["epoch_log_json"])
    if shares is not None:
        shares.append(sampler.shares(epoch_log[1]["unix"], epoch_log[-1]["unix"]))
    return steady(epoch_log)


def print_shares(shares: list[dict[str, float]]) -> None:
    """Each process's share of a core during ray-1's steady state (median over the repeats), largest first."""
    names = sorted({n for s in shares for n in s}, key=lambda n: -statistics.median(s.get(n, 0.0) for s in shares))
    print(f"\nray-1, steady state: CPU per process, in cores (median of {len(shares)}; the machine has {os.cpu_count()})")
    for name in names:
        print(f"  {statistics.median(s.get(name, 0.0) for s in shares):6.3f}  {name}")
    print(f"  {statistics.median(sum(s.values()) for s in shares):6.3f}  all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="recommended,article-mlp")
    parser.add_argument("--seconds", type=float, default=60.0, help="training seconds per measurement")
    parser.add_argument("--workers", type=int, default=2, help="N of the ray-N row")
    parser.add_argument("--only", default="bare,loop,ray-1,ray-N", help="which rows to run")
    parser.add_argument("--repeat", type=int, default=1, help="times each row runs, in turn with the others")
    parser.add_argument("--set", action="append", default=[], help="section.key=value for the ray rows (e.g. ray.dashboard=true)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)

    from gan.data.sources import load_source  # noqa: PLC0415
    from gan.data.writer import stratified_split  # noqa: PLC0415
    from pipelines.config import load_config, preset_path  # noqa: PLC0415
    from pipelines.workspace import Workspace, configure_environment  # noqa: PLC0415

    source = load_source("bundled-mnist")
    heldout = stratified_split(source.labels, 0.2, 0)
    images, labels = source.images[~heldout], source.labels[~heldout]
    classes = int(labels.max()) + 1
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        configure_environment(Workspace.of(folder))
        for preset in args.presets.split(","):
            recipe = load_config([ROOT / "conf" / "pipeline.yaml", preset_path(preset)]).recipe
            runs = {
                "bare": lambda: (bare_loop(recipe, images, labels, classes, args.seconds), None),
                "loop": lambda: loop_in_process(recipe, images, labels, classes, args.seconds),
                "ray-1": lambda: ray_train(preset, 1, args.seconds, Path(folder), shares, tuple(args.set)),
                "ray-N": lambda: ray_train(preset, args.workers, args.seconds, Path(folder), None, tuple(args.set)),
            }
            figures: dict[str, list[tuple[float, int | None]]] = {name: [] for name in args.only.split(",")}
            shares: list[dict[str, float]] = []
            for repeat in range(args.repeat):
                for name in figures:
                    print(f"[throughput] {preset}: {name} ({repeat + 1} of {args.repeat}) ...", flush=True)
                    figures[name].append(runs[name]())
                    torch.set_num_threads(cores)  # a worker in this process may have changed it
            bases = [rate for rate, _ in figures.get("bare", [])]
            print(f"\n{preset} (global batch {recipe.train.batch_size}, {cores} cores, {args.repeat} repeat(s))")
            print(f"{'run':<8}{'img/s (median)':>16}{'x bare (median)':>17}{'x bare (range)':>18}{'epochs':>8}")
            for name, measured in figures.items():
                label, rates = name.replace("-N", f"-{args.workers}"), [rate for rate, _ in measured]
                ratios = [rate / base for rate, base in zip(rates, bases)]
                spread = f"{min(ratios):.3f}-{max(ratios):.3f}" if ratios else ""
                ratio = statistics.median(ratios) if ratios else float("nan")
                print(f"{label:<8}{statistics.median(rates):>16.0f}{ratio:>17.3f}{spread:>18}{measured[-1][1] or '':>8}")
                rows.append({"preset": preset, "run": label, "images_per_sec": [round(r, 1) for r in rates],
                             "ratio_to_bare": [round(r, 3) for r in ratios], "epochs": [e for _, e in measured]})
            if shares:
                print_shares(shares)
            print(flush=True)
    print(json.dumps({"cores": cores, "torch": torch.__version__, "seconds": args.seconds, "repeat": args.repeat, "rows": rows}))


if __name__ == "__main__":
    main()
