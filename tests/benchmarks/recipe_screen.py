"""Benchmark: screen a training recipe in one process, without Ray, Prefect or MLflow, scored as the pipeline scores.

Usage: .venv/bin/python tests/benchmarks/recipe_screen.py '{"model": {"conditional": true}, "train": {"epochs": 20}}' [--name NAME] [--out DIR]

The argument is a YAML/JSON mapping of recipe sections (model / train / reg / optim) over the library's
defaults. The data are the bundled MNIST subset split exactly as `ingest` splits it (the same 4000
training and 1000 held-out images, in the same order), and the feature classifier is trained as
`evaluate` trains it (same data, epochs and seed), so the FID here is the pipeline's FID: 1000 samples of
the EMA generator against the training images, beside the real-vs-real floor. Prints one line per
epoch, then a JSON summary (also appended to DIR/results.jsonl) with the live G's FID beside the EMA
generator's and the quick FIDs over training time; writes DIR/NAME.png with 64 samples.
"""

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from gan.metrics.classes import class_histogram
from gan.metrics.classifier import embed, train_classifier
from gan.metrics.evaluation import Embedded, Reference, score
from gan.metrics.quick_fid import QuickFID
from gan.config import EvalConfig, Recipe
from gan.data.sources import load_source
from gan.data.writer import stratified_split
from gan.images import save_grid
from gan.latent import Latent
from gan.networks import build_generator
from gan.sampling import generate
from gan.batches import in_memory_batches
from gan.training_loop import train

SOURCE, HOLDOUT, SPLIT_SEED = "bundled-mnist", 0.2, 0  # the defaults of the data section
EVAL = EvalConfig()


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training images, their labels and the held-out images, in the order ingest writes them."""
    source = load_source(SOURCE)
    heldout = stratified_split(source.labels, HOLDOUT, SPLIT_SEED)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(source.labels))
    train_rows, heldout_rows = order[~heldout[order]], order[heldout[order]]
    return source.images[train_rows], source.labels[train_rows], source.images[heldout_rows]


class LastState:
    """A sink that keeps the last checkpoint state (copied: the state shares memory with the live weights)."""

    state: dict | None = None

    def log(self, step: int, stats: dict) -> None: ...

    def samples(self, step: int, images: torch.Tensor) -> None: ...

    def epoch_end(self, epoch: int, m: dict, state) -> None:  # noqa: ANN001
        if state is not None:
            self.state = copy.deepcopy(state())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="{}", help="recipe sections over the defaults, as YAML/JSON")
    parser.add_argument("--name", default="screen")
    parser.add_argument("--out", type=Path, default=Path("recipe-screen"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = Recipe.model_validate(yaml.safe_load(args.recipe) or {})
    images, labels, heldout = split()
    shape, classes = tuple(images.shape[1:]), int(labels.max()) + 1

    # 1. The evaluation's yardstick: its classifier, the training images' features, the floor.
    classifier = train_classifier(images, labels, classes, EVAL.classifier_epochs, EVAL.classifier_seed)
    reference_feats, reference_probs = embed(classifier, images)
    reference = Reference.of(reference_feats, class_histogram(reference_probs))
    real = heldout[np.random.default_rng(EVAL.seed).choice(len(heldout), EVAL.num_samples, replace=False)]
    real_feats, real_probs = embed(classifier, real)
    floor = score(Embedded(real_feats, real_probs, real_probs), reference, 0, EVAL.coverage_min_fraction)
    mix = np.bincount(labels, minlength=classes) / len(labels)  # the class mix conditional samples are drawn in
    quick = QuickFID(classifier, reference.mu, reference.cov, mix, EVAL.num_samples, EVAL.seed)

    # 2. Train, with quick FIDs on the schedule the recipe asks for.
    sink, started = LastState(), time.time()
    steps_per_epoch = len(images) // recipe.train.batch_size
    train(recipe, shape, classes, in_memory_batches(images, labels, recipe.train.batch_size, recipe.train.seed), sink,
          steps_per_epoch=steps_per_epoch, quick_fid=quick)
    wall = time.time() - started

    # 3. Score the EMA generator as `evaluate` does, and the live G beside it.
    latent = Latent.of(recipe.model, classes)
    labels_drawn = torch.from_numpy(np.random.default_rng(EVAL.seed).choice(classes, EVAL.num_samples, p=mix))
    z, c = latent.sample(EVAL.num_samples, torch.Generator().manual_seed(EVAL.seed), labels=labels_drawn)
    scores = {}
    for key in ("G_ema", "G"):
        G = build_generator(recipe.model, shape, latent)
        G.load_state_dict(sink.state[key])
        fake = generate(G, z, c)
        feats, probs = embed(classifier, fake)
        scores[key] = score(Embedded(feats, probs, probs), reference, 0, EVAL.coverage_min_fraction)
        if key == "G_ema":
            args.out.mkdir(parents=True, exist_ok=True)
            save_grid(fake[:64], args.out / f"{args.name}.png")
    ema = scores["G_ema"]
    result = {
        "name": args.name, "recipe": yaml.safe_load(args.recipe) or {}, "wall_seconds": round(wall, 1),
        "train_seconds": round(float(sink.state["train_seconds"]), 1), "steps": int(sink.state["step"]),
        "fid": round(ema["fid"], 2), "fid_over_floor": round(ema["fid"] / floor["fid"], 2), "fid_live_g": round(scores["G"]["fid"], 2),
        "is": round(ema["inception_score"], 2), "is_floor": round(floor["inception_score"], 2), "classes": ema["classes_covered"],
        "class_kl": round(ema["class_kl"], 4), "floor_fid": round(floor["fid"], 2),
        "quick_fid": [(q["epoch"], q["seconds"], round(q["fid"], 2)) for q in json.loads(sink.state["snapshots_json"])],
    }
    print(json.dumps(result))
    with (args.out / "results.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
