"""Benchmark: the feature-set metrics' seconds on N x N random features, ours beside torchmetrics' on the same features.

Usage: .venv/bin/python tests/benchmarks/eval_metrics.py [--n 10000] [--dim 512] [--subsets 100] [--subset-size 1000]

Real features are N(0, I), fake ones shifted and stretched (seeded), both float64 so that both sides do
the same arithmetic. One after another in this process, every core as torch threads:
- FID: ours is `streaming_stats` over batches of --batch rows for each set, then the Frechet distance
  (eigen-decomposition square root); torchmetrics' is FrechetInceptionDistance fed the same batches
  through an identity feature module, update and compute;
- KID: ours is `kernel_inception_distance`, torchmetrics' KernelInceptionDistance, with the same subsets
  (torch's global generator seeded as ours, so both draw identical rows and the values must agree);
- precision/recall (k=3) and density/coverage (k=5): ours only, float32 distances (torchmetrics has none).
Prints a table of seconds, the ratio ours/theirs and both values, then the JSON of all rows.
"""

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gan.metrics import evaluation  # noqa: F401  (fills METRICS)
from gan.metrics.kid import kernel_inception_distance
from gan.metrics.registry import compute


def timed(fn: Callable[[], dict[str, float]]) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    values = fn()
    return time.perf_counter() - started, values


def identity_features(dim: int) -> nn.Module:
    """torchmetrics' feature module: the batch it is given is already the features. `num_features` spares FID
    its probe with a dummy 299 x 299 image."""
    module = nn.Identity()
    module.num_features = dim
    return module


def ours_fid(real: np.ndarray, fake: np.ndarray, batch: int) -> dict[str, float]:
    return compute("fid", real, fake, batch_size=batch)


def theirs_fid(real: np.ndarray, fake: np.ndarray, batch: int) -> dict[str, float]:
    fid = FrechetInceptionDistance(feature=identity_features(real.shape[1]))
    for start in range(0, len(real), batch):
        fid.update(torch.from_numpy(real[start : start + batch]), real=True)
    for start in range(0, len(fake), batch):
        fid.update(torch.from_numpy(fake[start : start + batch]), real=False)
    return {"fid": float(fid.compute())}


def ours_kid(real: np.ndarray, fake: np.ndarray, subsets: int, subset_size: int, seed: int) -> dict[str, float]:
    mean, std = kernel_inception_distance(real, fake, subsets, subset_size, seed)
    return {"kid": mean, "kid_std": std}


def theirs_kid(real: np.ndarray, fake: np.ndarray, subsets: int, subset_size: int, seed: int, batch: int) -> dict[str, float]:
    warnings.filterwarnings("ignore", message="Metric `Kernel Inception Distance` will save all extracted features")
    kid = KernelInceptionDistance(feature=nn.Identity(), subsets=subsets, subset_size=subset_size)
    for start in range(0, len(real), batch):
        kid.update(torch.from_numpy(real[start : start + batch]), real=True)
    for start in range(0, len(fake), batch):
        kid.update(torch.from_numpy(fake[start : start + batch]), real=False)
    torch.manual_seed(seed)  # the same subsets as ours
    mean, std = kid.compute()
    return {"kid": float(mean), "kid_std": float(std)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="samples in each set")
    parser.add_argument("--dim", type=int, default=512, help="feature dimensions")
    parser.add_argument("--subsets", type=int, default=100, help="KID subsets")
    parser.add_argument("--subset-size", type=int, default=1000, help="KID rows per subset (capped at --n)")
    parser.add_argument("--batch", type=int, default=1000, help="rows per streamed batch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    rng = np.random.default_rng(args.seed)
    real = rng.standard_normal((args.n, args.dim))  # [N, D] float64
    fake = rng.standard_normal((args.n, args.dim)) * 1.1 + 0.05
    subset_size = min(args.subset_size, args.n)

    runs: dict[str, tuple[Callable[[], dict[str, float]], Callable[[], dict[str, float]] | None]] = {
        "fid": (lambda: ours_fid(real, fake, args.batch), lambda: theirs_fid(real, fake, args.batch)),
        "kid": (
            lambda: ours_kid(real, fake, args.subsets, subset_size, args.seed),
            lambda: theirs_kid(real, fake, args.subsets, subset_size, args.seed, args.batch),
        ),
        "precision_recall": (lambda: compute("precision_recall", real, fake), None),
        "density_coverage": (lambda: compute("density_coverage", real, fake), None),
    }
    rows = []
    for name, (ours, theirs) in runs.items():
        print(f"[eval_metrics] {name} ...", flush=True)
        ours_s, ours_values = timed(ours)
        theirs_s, theirs_values = timed(theirs) if theirs else (None, {})
        rows.append({"metric": name, "ours_s": round(ours_s, 3), "torchmetrics_s": theirs_s and round(theirs_s, 3),
                     "ratio": theirs_s and round(ours_s / theirs_s, 3), "ours": ours_values, "torchmetrics": theirs_values})

    setup = f"KID {args.subsets} x {subset_size}, {cores} cores, torch {torch.__version__}"
    print(f"\n{args.n} x {args.n} features of {args.dim} dims, {setup}")
    print(f"{'metric':<18}{'ours s':>9}{'tm s':>9}{'ours/tm':>9}  values (ours | torchmetrics)")
    for row in rows:
        theirs_s, ratio = (f"{row[k]:.3f}" if row[k] is not None else "-" for k in ("torchmetrics_s", "ratio"))
        values = " | ".join(" ".join(f"{k} {v:.6g}" for k, v in row[side].items()) for side in ("ours", "torchmetrics") if row[side])
        print(f"{row['metric']:<18}{row['ours_s']:>9.3f}{theirs_s:>9}{ratio:>9}  {values}")
    print(json.dumps({"n": args.n, "dim": args.dim, "cores": cores, "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
