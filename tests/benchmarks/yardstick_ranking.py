"""Benchmark: do the yardsticks rank "generators" of known quality in their order? The classifier's features against the
self-supervised encoder's, on a ladder of image sets made from real images.

Usage: .venv/bin/python tests/benchmarks/yardstick_ranking.py [--source bundled-mnist] [--size S] [--channels C] [--classes K] [--train 4000]
       [--heldout 1000] [--classifier-epochs 15] [--ssl-epochs 15] [--checkpoint DIR] [--out results.json] [--threads 2]

The source's images (with --classes K, those of its first K labels only: few-class data) are split (seeded) into
--train training images, which train both networks (the classifier as the evaluation does, `train_classifier` for
--classifier-epochs; the encoder by `train_encoder` for --ssl-epochs) and are the FID reference, and --heldout
held-out images. Each rung of the ladder is --heldout images made from the held-out ones:
- real (floor): the held-out images themselves; FID/floor divides by its FID;
- blur σ 0.5 / 1 / 1.5: blurred by a Gaussian of that many pixels;
- noise std 0.1: plus Gaussian noise of std 0.1 (of the [0, 1] range), clipped;
- real, half x-flipped: every second held-out image mirrored (what data.mirror trains towards; scored, not ranked);
- 100 / 20 / 5 images repeated: a collapse to a handful of images;
- 5 / 2 / 1 classes (those fewer than the data's): drawn from the held-out images of the most common classes only;
- with --checkpoint DIR: a trained checkpoint's EMA generator (as pipelines/stages/evaluate.py loads it; labels drawn
  in the training split's class mix) and its samples blurred by σ 1.
Each chain (blur, repeated modes, class collapse) starts at the real images and degrades one way: a faithful yardstick
orders it so. Per extractor: FID and FID/floor of every rung, Spearman's rho and Kendall's tau of each chain, and
Kendall's tau over the ordered pairs of all chains together; noise and the checkpoint are scored, not ranked. A
source without classes (or of one) has no classifier and no class rungs: the encoder only. Prints progress and the
table; --out writes the JSON of every number.
"""

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gan.batches import half_mirrored
from gan.metrics.classifier import to_float, train_classifier
from gan.metrics.evaluation import Reference
from gan.metrics.extractors import Extractor, build_extractor
from gan.metrics.selfsupervised import train_encoder

NOISE_STD = 0.1
SIGMAS = (0.5, 1.0, 1.5)  # blur rungs, in pixels
CLASSES = (5, 2, 1)  # class-collapse rungs: images of this many classes only
MODES = (100, 20, 5)  # repeated-modes rungs: this many images, each repeated
SEED = 0

def blurred(images: np.ndarray | torch.Tensor, sigma: float) -> torch.Tensor:
    """Images [N, C, H, W] (uint8 or [0, 1]) blurred by a Gaussian of `sigma` pixels (separable, reflected edges), in [0, 1]."""
    x = to_float(images)
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = (taps / taps.sum()).repeat(x.shape[1], 1, 1)  # [C, 1, 2r+1]: one filter per channel
    x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, taps.unsqueeze(2), groups=x.shape[1])  # along the rows
    return F.conv2d(x, taps.unsqueeze(3), groups=x.shape[1])  # along the columns


def noisy(images: np.ndarray, std: float, seed: int) -> torch.Tensor:
    """Images plus Gaussian noise of `std`, clipped to [0, 1]."""
    x = to_float(images)
    return (x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def repeated(images: np.ndarray, modes: int, seed: int) -> np.ndarray:
    """As many images as given, made of `modes` of them (seeded) repeated: a collapse to a handful of images."""
    rng = np.random.default_rng(seed)
    return images[rng.choice(len(images), modes, replace=False)][np.arange(len(images)) % modes]


def collapsed(images: np.ndarray, labels: np.ndarray, classes: int, seed: int) -> np.ndarray:
    """As many images as given, drawn (seeded, with replacement) from those of the `classes` most common labels only."""
    keep = np.argsort(-np.bincount(labels), kind="stable")[:classes]
    pool = np.flatnonzero(np.isin(labels, keep))
    return images[np.random.default_rng(seed).choice(pool, len(images), replace=True)]


def ranks(values: list[float]) -> np.ndarray:
    """Ranks 0..n-1 of values (ties broken by order; FIDs of distinct image sets do not tie)."""
    return np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)


def spearman(values: list[float]) -> float:
    """Spearman's rho between the order of `values` and their intended order (the order given)."""
    return float(np.corrcoef(np.arange(len(values)), ranks(values))[0, 1])


def kendall_pairs(values: list[float]) -> tuple[int, int]:
    """(concordant, discordant) pairs of `values` against their intended order (the order given)."""
    signs = [np.sign(values[j] - values[i]) for i in range(len(values)) for j in range(i + 1, len(values))]
    return int(sum(s > 0 for s in signs)), int(sum(s < 0 for s in signs))


def ladder(heldout: np.ndarray, labels: np.ndarray, classes: int) -> tuple[dict[str, Callable[[], object]], dict[str, list[str]]]:
    """The rungs by name (each makes its images), and the chains of rungs in their intended order, best first: each
    chain starts at the held-out real images and degrades one way. Noise has no chain (it is scored, not ranked)."""
    rungs: dict[str, Callable[[], object]] = {"real (floor)": lambda: heldout}
    rungs |= {f"blur σ {sigma}": lambda s=sigma: blurred(heldout, s) for sigma in SIGMAS}
    rungs[f"noise std {NOISE_STD}"] = lambda: noisy(heldout, NOISE_STD, SEED)
    rungs["real, half x-flipped"] = lambda: half_mirrored(heldout)  # what data.mirror trains a generator towards
    rungs |= {f"{m} images repeated": lambda m=m: repeated(heldout, m, SEED) for m in MODES}
    chains = {"blur": ["real (floor)", *(f"blur σ {sigma}" for sigma in SIGMAS)],
              "repeated modes": ["real (floor)", *(f"{m} images repeated" for m in MODES)]}
    fewer = [k for k in CLASSES if k < classes]  # a "collapse" to as many classes as the data has is the real images again
    if fewer:
        rungs |= {f"{k} classes": lambda k=k: collapsed(heldout, labels, k, SEED) for k in fewer}
        chains["class collapse"] = ["real (floor)", *(f"{k} classes" for k in fewer)]
    return rungs, chains


def generator_rungs(checkpoint: Path, n: int, class_mix: np.ndarray) -> dict[str, Callable[[], object]]:
    """A trained checkpoint's EMA generator, as the evaluation draws it, and its samples blurred by σ 1 (unranked)."""
    from gan import checkpoint as ckpt  # noqa: PLC0415
    from gan.metrics.evaluation import draw  # noqa: PLC0415

    G, _, latent = ckpt.ema_generator(ckpt.load(checkpoint))
    mix = class_mix if latent.num_classes == len(class_mix) else np.full(max(latent.num_classes, 1), 1 / max(latent.num_classes, 1))
    samples = draw(G, latent, n, SEED, mix)[1]
    return {"checkpoint EMA G": lambda: samples, "checkpoint, blur σ 1": lambda: blurred(samples, 1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="bundled-mnist")
    parser.add_argument("--classes", type=int, default=0, help="keep the images of the first K labels only (0: all)")
    parser.add_argument("--size", type=int, default=0, help="data.image_size: the images resized and centre-cropped to this side (0: as they are)")
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3), help="data.channels: every source converted to them")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--heldout", type=int, default=1000)
    parser.add_argument("--classifier-epochs", type=int, default=15)
    parser.add_argument("--ssl-epochs", type=int, default=15)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from gan.data.shaping import Shaping  # noqa: PLC0415
    from gan.data.sources import load_source  # noqa: PLC0415

    source = load_source(args.source, Shaping(channels=args.channels, size=args.size))
    images, labels = source.images, source.labels
    if args.classes:
        images, labels = images[labels < args.classes], labels[labels < args.classes]
    order = np.random.default_rng(SEED).permutation(len(images))
    train, heldout = order[: args.train], order[args.train : args.train + args.heldout]
    classes = int(labels.max()) + 1 if source.labelled else 1
    print(f"{source.description}: {len(train)} training and {len(heldout)} held-out {'x'.join(map(str, images.shape[1:]))} images, "
          f"{classes} class(es)", flush=True)

    extractors: dict[str, Extractor] = {}
    seconds: dict[str, float] = {}
    if classes > 1:
        started = time.time()
        print(f"training the classifier ({args.classifier_epochs} epochs) ...", flush=True)
        classifier = train_classifier(images[train], labels[train], classes, args.classifier_epochs, SEED)
        seconds["classifier"] = time.time() - started
        extractors["classifier"] = build_extractor("classifier", classifier=classifier, classifier_key="benchmark")
    started, losses = time.time(), []
    print(f"training the encoder ({args.ssl_epochs} epochs) ...", flush=True)
    encoder = train_encoder(images[train], args.ssl_epochs, SEED, losses=losses)
    seconds["selfsupervised"] = time.time() - started
    print(f"  NT-Xent loss by epoch: {' '.join(f'{v:.2f}' for v in losses)}", flush=True)
    extractors["selfsupervised"] = build_extractor("selfsupervised", encoder=encoder, encoder_key="benchmark")
    for name, s in seconds.items():
        print(f"  {name}: trained in {s:.0f} s", flush=True)

    rungs, chains = ladder(images[heldout], labels[heldout], classes)
    if args.checkpoint:
        rungs |= generator_rungs(args.checkpoint, len(heldout), np.bincount(labels[train], minlength=classes) / len(train))
    fids: dict[str, dict[str, float]] = {name: {} for name in extractors}
    for name, extractor in extractors.items():
        reference = Reference.of(extractor.embed(images[train])[0], np.ones(1))
        for rung, make in rungs.items():
            fids[name][rung] = reference.fid(extractor.embed(make())[0])
        print(f"scored {len(rungs)} image sets with the {name}", flush=True)

    agreement = {name: agreement_of(fids[name], chains) for name in extractors}
    print("\n| image set | " + " | ".join(f"{n} FID | {n} FID/floor" for n in extractors) + " |\n|" + "---|" * (1 + 2 * len(extractors)))
    for rung in rungs:
        print(f"| {rung} | " + " | ".join(f"{fids[n][rung]:.2f} | {fids[n][rung] / fids[n]['real (floor)']:.1f}" for n in extractors) + " |")
    print()
    for name, a in agreement.items():
        per_chain = "; ".join(f"{chain}: Spearman {a[chain]['spearman']:.2f}, Kendall {a[chain]['kendall']:.2f}" for chain in chains)
        print(f"{name} (trained in {seconds[name]:.0f} s): {per_chain}; all {a['pairs']} ordered pairs: Kendall tau {a['kendall']:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"source": args.source, "train": len(train), "heldout": len(heldout), "seconds": seconds,
                                        "ssl_losses": losses, "fid": fids, "chains": chains, "agreement": agreement}, indent=2))
        print(f"wrote {args.out}")


def agreement_of(fids: dict[str, float], chains: dict[str, list[str]]) -> dict:
    """Each chain's Spearman rho and Kendall tau between the FIDs' order and the intended one, and Kendall's tau over the
    ordered pairs of every chain together."""
    out: dict = {}
    concordant = discordant = 0
    for chain, names in chains.items():
        values = [fids[n] for n in names]
        c, d = kendall_pairs(values)
        out[chain] = {"spearman": spearman(values), "kendall": (c - d) / (c + d)}
        concordant, discordant = concordant + c, discordant + d
    return out | {"pairs": concordant + discordant, "kendall": (concordant - discordant) / (concordant + discordant)}


if __name__ == "__main__":
    main()
