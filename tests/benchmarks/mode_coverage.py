"""Benchmark: mode coverage on 2-D mixtures of Gaussians, the classic mode-collapse test, per recipe.

Usage: .venv/bin/python tests/benchmarks/mode_coverage.py [--seeds 5] [--recipes minimax,ns,...] [--steps 600] [--out mode-coverage] [--threads 2]

Data (PacGAN's settings, Lin et al. 2018): 'ring', 8 Gaussians on a circle of radius 1, std 0.01; 'grid',
25 Gaussians at {-4,-2,0,2,4}^2, std 0.05; a fixed training set of 100k points per (data set, seed).
Each run trains the library's own losses and regularisers through the same `train()` / `GANLoss` path as
images, in one process, with the same networks for every recipe: an MLP G with a 2-D latent (PacGAN's) and
4 hidden layers of 400, an MLP D with 3 hidden layers of 200 (LeakyReLU; PacGAN used BatchNorm+ReLU in G
and maxout in D), batch 100, `--steps` generator steps (n_critic D steps each).
It then draws 2500 points from the EMA generator (what the pipeline evaluates) and from the live G, both
taken from the final checkpoint the sink receives. A mode is covered when at least 20 samples lie within
3 std of it; a sample is high quality when it lies within 3 std of its nearest mode (PacGAN's rules).
Prints a table (mean ± std over seeds) and writes table.md, results.json and samples.png (seed 0) to --out.
'recommended' takes the train / reg / optim sections of conf/presets/recommended.yaml and D's spectral norm
and dropout from its model section (its architecture, widths, class input, epochs and batch size give way
to this benchmark's network and budget); it is skipped if the file is missing.
"""

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from gan.config import ConfigError, ModelConfig, OptimConfig, Recipe, RegConfig, TrainConfig
from gan.latent import Latent
from gan.networks import build_generator
from gan.sampling import generate
from gan.batches import in_memory_batches
from gan.training_loop import train

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "conf" / "presets" / "recommended.yaml"
# Unconditional, and plain unless a recipe says otherwise (the library defaults to spectral norm and a class input).
MODEL = ModelConfig(arch="mlp", z_dim=2, g_hidden=[400] * 4, d_hidden=[200] * 3, conditional=False, spectral_norm=False, d_dropout=0.0)
D_SETTINGS = ("spectral_norm", "d_dropout")  # taken from the preset's model section
BATCH = 100
TRAIN_POINTS = 100_000
EVAL_SEED = 1234  # latents of the evaluated samples: seed EVAL_SEED + run seed, the same for EMA and live G
ADAM_WGAN = {"lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.5, "beta2": 0.9}
RECIPES: dict[str, dict] = {  # section -> overrides of the library's defaults
    "minimax": {"train": {"loss": "minimax"}, "optim": {"lr_g": 2e-4, "lr_d": 2e-4}},
    "ns": {"train": {"loss": "ns"}, "optim": {"lr_g": 2e-4, "lr_d": 2e-4}},
    "wgan-gp": {"train": {"loss": "wgan-gp", "n_critic": 5}, "optim": ADAM_WGAN},
    "hinge-r1": {"train": {"loss": "hinge"}, "reg": {"r1_gamma": 0.1}},
    "recommended": {},  # read from PRESET at run time
}
REFERENCE = "Published (PacGAN, Lin et al. 2018, grid, their networks and budget): GAN ~17/25 modes; PacGAN ~24.8/25 modes at ~94% high quality."


@dataclass(frozen=True)
class Mixture:
    centres: np.ndarray  # [K, 2]
    std: float
    extent: float  # half-width of the plot

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """n points [n, 2] float32 from equally weighted modes, and each point's mode index [n]."""
        rng = np.random.default_rng(seed)
        labels = rng.integers(len(self.centres), size=n)
        points = self.centres[labels] + self.std * rng.standard_normal((n, 2))
        return points.astype(np.float32), labels


ANGLES = 2 * np.pi * np.arange(8) / 8
MIXTURES = {
    "ring": Mixture(np.stack([np.cos(ANGLES), np.sin(ANGLES)], 1), 0.01, 1.5),
    "grid": Mixture(np.array([(x, y) for x in range(-4, 5, 2) for y in range(-4, 5, 2)], dtype=float), 0.05, 5.5),
}


class LastCheckpoint:
    """A sink that keeps the last checkpoint state and ignores the rest."""

    state: dict | None = None

    def log(self, step: int, stats: dict[str, float]) -> None:
        pass

    def samples(self, step: int, images: torch.Tensor) -> None:
        pass

    def epoch_end(self, epoch: int, metrics: dict[str, float], state) -> None:  # noqa: ANN001
        if state is not None:
            self.state = state()


def recipe_sections(name: str) -> dict | None:
    """The recipe's train / reg / optim overrides; for 'recommended' the preset's, or None when it does not exist."""
    if name != "recommended":
        return RECIPES[name]
    if not PRESET.is_file():
        return None
    from pipelines.config import load_config  # noqa: PLC0415  (the pipeline's YAML loader, with its config errors)

    cfg = load_config(PRESET)
    sections = {section: getattr(cfg, section).model_dump(exclude_unset=True) for section in ("train", "reg", "optim")}
    # D's regularising model settings carry over to the MLP; the architecture, widths and class input do not.
    return {**sections, "model": {k: v for k, v in cfg.model.model_dump(exclude_unset=True).items() if k in D_SETTINGS}}


def build_recipe(sections: dict, seed: int, steps: int) -> tuple[Recipe, int]:
    """The benchmark's network and budget around a recipe's sections: (recipe, batches per epoch).

    `steps` counts G steps, so a recipe with n_critic D steps per G step trains on n_critic x as many batches,
    split into near-equal epochs of at most one pass over the training set."""
    train_cfg = TrainConfig(**{**sections.get("train", {}), "batch_size": BATCH, "seed": seed})
    batches = steps * train_cfg.n_critic
    train_cfg.epochs = math.ceil(batches / (TRAIN_POINTS // BATCH))
    model = MODEL.model_copy(update=sections.get("model", {}))
    recipe = Recipe(model=model, train=train_cfg, reg=RegConfig(**sections.get("reg", {})), optim=OptimConfig(**sections.get("optim", {})))
    return recipe, math.ceil(batches / train_cfg.epochs)


def train_once(recipe: Recipe, mixture: Mixture, per_epoch: int) -> dict:
    """Train on a fresh training set of the run's seed; return the final checkpoint state."""
    points, labels = mixture.sample(TRAIN_POINTS, recipe.train.seed)
    one_pass = in_memory_batches(points, labels, BATCH, recipe.train.seed)
    sink = LastCheckpoint()
    with contextlib.redirect_stdout(io.StringIO()):  # the loop's per-epoch lines; main prints one line per run
        train(recipe, (2,), len(mixture.centres), lambda epoch: islice(one_pass(epoch), per_epoch), sink, steps_per_epoch=per_epoch)
    assert sink.state is not None, "the last epoch always hands the sink a checkpoint"
    return sink.state


def sample_points(state: dict, key: str, n: int, seed: int) -> np.ndarray:
    """n points [n, 2] from the checkpoint's generator `key` ('G_ema' or 'G'), on fixed latents."""
    latent = Latent.of(MODEL, 0)
    G = build_generator(MODEL, (2,), latent)
    G.load_state_dict(state[key])
    z, _ = latent.sample(n, torch.Generator().manual_seed(EVAL_SEED + seed))
    return generate(G, z).numpy()


def coverage(points: np.ndarray, mixture: Mixture, radius: float, min_count: int) -> dict[str, float]:
    """PacGAN's rules: high quality = within radius x std of the nearest mode; a mode is covered by >= min_count of those."""
    dist = np.linalg.norm(points[:, None, :] - mixture.centres[None], axis=2)  # [N, K]; NaN points are never close
    close = dist.min(1) < radius * mixture.std
    counts = np.bincount(dist[close].argmin(1), minlength=len(mixture.centres))
    return {"modes": int((counts >= min_count).sum()), "high_quality": float(close.mean())}


def run_one(name: str, sections: dict, data: str, seed: int, args: argparse.Namespace) -> tuple[dict, np.ndarray]:
    """Train one (recipe, data set, seed), score its EMA and live G; return the record and the EMA samples [n, 2]."""
    recipe, per_epoch = build_recipe(sections, seed, args.steps)
    started = time.perf_counter()
    state = train_once(recipe, MIXTURES[data], per_epoch)
    seconds = time.perf_counter() - started
    points = {g: sample_points(state, key, args.samples, seed) for g, key in (("ema", "G_ema"), ("live", "G"))}
    scores = {g: coverage(p, MIXTURES[data], args.radius, args.min_count) for g, p in points.items()}
    record = {"recipe": name, "dataset": data, "seed": seed, "seconds": round(seconds, 2),
              "d_steps": state["step"], "g_steps": state["step"] // recipe.train.n_critic, **scores}
    return record, points["ema"]


def progress_line(r: dict) -> str:
    k, e, lv = len(MIXTURES[r["dataset"]].centres), r["ema"], r["live"]
    return (f"{r['recipe']:<11} {r['dataset']:<4} seed {r['seed']} {r['seconds']:6.1f} s  "
            f"EMA {e['modes']:>2}/{k} modes {e['high_quality']:4.0%} HQ | live G {lv['modes']:>2}/{k} {lv['high_quality']:4.0%} HQ")


def preset_note(sections: dict) -> str:
    """What 'recommended' runs here, and what of the preset does not apply to 2-D points."""
    images_only = "; reg.diffaugment acts on images only, so it is off on points" if sections["reg"].get("diffaugment") else ""
    return (f"note: 'recommended' = {PRESET.relative_to(ROOT)} {sections}; its architecture, widths, class input, train.epochs and "
            f"train.batch_size give way to this benchmark's network and budget{images_only}")


def mean_std(values: list[float], fmt: str) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{format(statistics.mean(values), fmt)} ± {format(spread, fmt)}"


def summary_table(runs: list[dict]) -> str:
    """Markdown: one row per (recipe, data set), mean ± std over seeds, EMA G and live G side by side."""
    lines = [
        "| recipe | data | modes, EMA G | high quality, EMA G | modes, live G | high quality, live G | seconds/run |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for recipe, data in dict.fromkeys((r["recipe"], r["dataset"]) for r in runs):
        group = [r for r in runs if (r["recipe"], r["dataset"]) == (recipe, data)]
        k = len(MIXTURES[data].centres)
        cells = [
            f"{mean_std([r[g]['modes'] for r in group], '.1f')} / {k}" if what == "modes" else mean_std([100 * r[g]["high_quality"] for r in group], ".0f") + " %"
            for g in ("ema", "live") for what in ("modes", "high_quality")
        ]
        lines.append(f"| {recipe} | {data} | " + " | ".join(cells) + f" | {statistics.mean(r['seconds'] for r in group):.0f} |")
    return "\n".join(lines)


def plot(samples: dict[tuple[str, str], np.ndarray], runs: list[dict], path: Path) -> None:
    """One panel per (recipe, data set): seed 0's EMA samples over the true mode centres."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    recipes, datasets = list(dict.fromkeys(r for r, _ in samples)), list(dict.fromkeys(d for _, d in samples))
    fig, axes = plt.subplots(len(recipes), len(datasets), figsize=(3.2 * len(datasets), 3.2 * len(recipes)), squeeze=False)
    for (recipe, data), points in samples.items():
        ax, mixture = axes[recipes.index(recipe)][datasets.index(data)], MIXTURES[data]
        run = next(r for r in runs if (r["recipe"], r["dataset"], r["seed"]) == (recipe, data, 0))
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.3, color="tab:blue")
        ax.scatter(mixture.centres[:, 0], mixture.centres[:, 1], s=25, marker="x", color="tab:red")
        ax.set(xlim=(-mixture.extent, mixture.extent), ylim=(-mixture.extent, mixture.extent), aspect="equal")
        ax.set_title(f"{recipe} / {data}: {run['ema']['modes']}/{len(mixture.centres)}, {run['ema']['high_quality']:.0%} HQ", fontsize=9)
    fig.suptitle("EMA generator, seed 0 (blue) over the true modes (red)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per (recipe, data set): 0 .. N-1")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of: {', '.join(RECIPES)}")
    parser.add_argument("--steps", type=int, default=600, help="generator steps per run (n_critic D steps each)")
    parser.add_argument("--out", type=Path, default=Path("mode-coverage"), help="folder for table.md, results.json, samples.png")
    parser.add_argument("--samples", type=int, default=2500, help="generated points evaluated per run")
    parser.add_argument("--min-count", type=int, default=20, help="high-quality samples a mode needs to count as covered")
    parser.add_argument("--radius", type=float, default=3.0, help="'high quality': within this many std of the nearest mode")
    parser.add_argument("--threads", type=int, default=2, help="torch threads; use 1 when other work shares the cores (2 contended threads crawl)")
    args = parser.parse_args()
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    if unknown := [n for n in names if n not in RECIPES]:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    torch.set_num_threads(args.threads)

    # 1. Recipes that can run (the recommended preset may not be written yet).
    try:
        recipes = {name: recipe_sections(name) for name in names}
    except ConfigError as err:
        sys.exit(str(err))
    for name in [n for n, s in recipes.items() if s is None]:
        print(f"note: skipping '{name}': {PRESET.relative_to(ROOT)} does not exist yet", flush=True)
        del recipes[name]
    if "recommended" in recipes:
        print(preset_note(recipes["recommended"]), flush=True)
    jobs = [(name, data, seed) for name in recipes for data in MIXTURES for seed in range(args.seeds)]

    # 2. One run per (recipe, data set, seed); seed 0's EMA samples are kept for the plot.
    runs, samples = [], {}
    for i, (name, data, seed) in enumerate(jobs, 1):
        record, ema_points = run_one(name, recipes[name], data, seed, args)
        runs.append(record)
        if seed == 0:
            samples[name, data] = ema_points
        print(f"[{i}/{len(jobs)}] {progress_line(record)}", flush=True)
    if not runs:
        sys.exit("no recipe to run")

    # 3. Table, raw results, picture.
    table = summary_table(runs)
    print(f"\n{table}\n\n{REFERENCE}")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {
        "batch_size": BATCH, "train_points": TRAIN_POINTS, "model": MODEL.model_dump(mode="json")}
    (args.out / "table.md").write_text(f"{table}\n\n{REFERENCE}\n")
    resolved = {name: build_recipe(sections, 0, args.steps)[0].model_dump(mode="json") for name, sections in recipes.items()}
    (args.out / "results.json").write_text(json.dumps({"settings": settings, "recipes": resolved, "runs": runs}, indent=1))
    plot(samples, runs, args.out / "samples.png")
    print(f"wrote {args.out}/table.md, results.json, samples.png")


if __name__ == "__main__":
    main()
