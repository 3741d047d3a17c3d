"""Benchmark: how fast a warm start from the champion reaches a cold run's quality when more data arrives.

Usage: .venv/bin/python tests/benchmarks/warm_start.py [--workdir DIR] [--first 0.6] [--set section.key=value ...]

The scheduled-retraining scenario on the bundled MNIST subset (5000 digits), as files in class folders:
1. a seeded 60 % of them (--first) is the source folder; `gan-pipeline run -c conf/retrain.yaml` finds no champion
   and trains from scratch on the whole budget: the champion;
2. the other 40 % of the files are copied in; the same command ingests the new data version, warm-starts from the
   champion, trains train.init_budget (a third) of the budget, and is scored head to head against the champion;
3. for comparison, a cold run of the same recipe on all the data with the whole budget (another model name).
Runs 2 and 3 train on the same data and are measured on the same yardstick (the feature classifier of that data, the
same samples and seeds); both record a quick FID every epoch (train.fid_every_epochs=1). Prints each run's FID ±
its bootstrap spread, the warm run's time to the cold run's final quick FID against the cold run's training time, and
the gate's decision; writes DIR/warm_start.json and DIR/warm_start.png (quick FID / floor against training seconds)
and DIR/data_change.png (the data-change report's class mix).
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gan.data.sources import load_source
from gan.images import save_time_to_quality
from pipelines.compare import quality_curve

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("gan-pipeline"))
RETRAIN = str(ROOT / "conf" / "retrain.yaml")
WARM, COLD = "bench-warm", "bench-cold"


def write_files(folder: Path, rows: np.ndarray) -> None:
    """The images of `rows` as PNG files in one folder per class: what a user's source folder holds."""
    source = load_source("bundled-mnist")
    for i in rows:
        target = folder / str(int(source.labels[i])) / f"{i:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(source.images[i, 0]).save(target)


def run(workdir: Path, name: str, *overrides: str) -> dict:
    """One `gan-pipeline run -c conf/retrain.yaml` in the working folder; its summary and evaluation report."""
    args = [CLI, "run", "-c", RETRAIN, "--set", f"data.source={workdir / 'source'}", "--set", f"registry.model_name={name}",
            *[a for o in overrides for a in ("--set", o)]]
    started = time.time()
    done = subprocess.run(args, cwd=workdir, capture_output=True, text=True)
    (workdir / "runs.log").open("a").write(f"$ {' '.join(args)}\n{done.stdout}\n{done.stderr}\n")
    assert done.returncode == 0, done.stderr[-3000:]
    path = next(line.removeprefix("summary: ") for line in done.stdout.splitlines() if line.startswith("summary: "))
    summary = json.loads(Path(path).read_text())
    report = json.loads(Path(summary["report"]).read_text())
    registered = next(line for line in done.stdout.splitlines() if line.startswith(("registered", "NOT registered")))
    print(f"{name}: {time.time() - started:.0f} s wall; {registered}", flush=True)
    return {"summary": summary, "report": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gan-warm-start-benchmark"))
    parser.add_argument("--first", type=float, default=0.6, help="share of the images in the first data version")
    parser.add_argument("--set", action="append", default=[], help="override for every run, e.g. train.max_minutes=3")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    order = np.random.default_rng(0).permutation(5000)
    first = order[: int(args.first * len(order))]

    # 1. The first data version: no champion yet, a cold start on the whole budget.
    write_files(workdir / "source", first)
    champion = run(workdir, WARM, *args.set)
    # 2. New files arrive: the warm start from the champion, and (3) a cold run on the same data for comparison.
    write_files(workdir / "source", order[len(first):])
    per_epoch = ["train.fid_every_epochs=1", *args.set]
    warm = run(workdir, WARM, *per_epoch)
    cold = run(workdir, COLD, "train.init_from=''", "train.init_missing=error", "train.init_budget=1", *per_epoch)

    assert warm["report"]["yardstick"]["key"] == cold["report"]["yardstick"]["key"], "warm and cold runs measured on different yardsticks"
    warm_curve, cold_curve = quality_curve(warm["report"]), quality_curve(cold["report"])
    target = cold_curve[-1]["fid"]
    reached = next((p["seconds"] for p in warm_curve if p["fid"] <= target), None)
    cold_seconds = cold["report"]["train_seconds"]
    result = {
        "first_share": args.first, "overrides": args.set,
        "champion": {"fid": champion["report"]["model"]["fid"], "fid_std": champion["report"]["model"]["fid_bootstrap_std"],
                     "train_seconds": champion["report"]["train_seconds"], "step": champion["report"]["step"]},
        **{name: {"fid": r["report"]["model"]["fid"], "fid_std": r["report"]["model"]["fid_bootstrap_std"],
                  "floor": r["report"]["real_vs_real"]["fid"], "train_seconds": r["report"]["train_seconds"], "step": r["report"]["step"],
                  "quick_fid": c} for name, r, c in (("warm", warm, warm_curve), ("cold", cold, cold_curve))},
        "target_quick_fid": target, "warm_reached_target_seconds": reached,
        "warm_to_cold_time_ratio": None if reached is None else reached / cold_seconds,
        "gate": warm["summary"]["registered"]["reason"], "promoted": warm["summary"]["registered"]["champion"],
        "data_change": warm["report"].get("data_change"),
    }
    (workdir / "warm_start.json").write_text(json.dumps(result, indent=2))
    floor = cold["report"]["real_vs_real"]["fid"]
    save_time_to_quality({"cold start, all data": cold_curve, "warm start from the 60 % champion": warm_curve}, workdir / "warm_start.png",
                         targets=(target / floor,))
    shutil.copy(Path(warm["summary"]["report"]).parent / "data_change.png", workdir / "data_change.png")
    ratio = "never" if reached is None else f"{reached:.0f} s = {result['warm_to_cold_time_ratio']:.2f} x the cold run's {cold_seconds:.0f} s"
    print(f"champion (first {args.first:.0%}): FID {result['champion']['fid']:.2f} ± {result['champion']['fid_std']:.2f}")
    print(f"warm start, all data: FID {result['warm']['fid']:.2f} ± {result['warm']['fid_std']:.2f} after {result['warm']['train_seconds']:.0f} s")
    print(f"cold start, all data: FID {result['cold']['fid']:.2f} ± {result['cold']['fid_std']:.2f} after {cold_seconds:.0f} s "
          f"(floor {floor:.2f})")
    print(f"warm start reached the cold run's final quick FID {target:.2f} in {ratio}")
    print(f"gate: {'promoted' if result['promoted'] else 'kept as challenger'}: {result['gate']}")
    print(f"written: {workdir / 'warm_start.json'}, {workdir / 'warm_start.png'}, {workdir / 'data_change.png'}")


if __name__ == "__main__":
    main()
