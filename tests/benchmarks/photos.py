"""Benchmark: the whole pipeline on real colour photos, `bundled-photos` (crops of scikit-learn's two sample photos).

Usage: .venv/bin/python tests/benchmarks/photos.py [--size 32|64|128] [--preset photo-SIZE] [--minutes 7.5]
       [--config conf/pipeline.yaml] [--set section.key=value ...] [--out results/]

One `gan-pipeline run -c conf/pipeline.yaml [--preset NAME]` with data.source=bundled-photos, data.channels=3,
data.image_size=SIZE, train.max_minutes=M and registry.model_name=photos-gan in a new empty folder (nothing cached;
`default` is the recommended recipe, which is class-conditional on the two photos), its output on this terminal as it
goes. The resident memory of it and every process it starts is polled every 0.2 s (tests/benchmarks/pipeline_memory.py).
At the end: the report's FID, the
real-vs-real floor and their ratio, training and wall seconds (tests/benchmarks/time_to_quality.py's line), the peak
resident memory of the Ray Train worker; OUT/photos-SIZEpx-PRESET.png, a grid of the EMA generator's samples beside one
of held-out real crops of the run's own dataset, and the figures in OUT/photos-SIZEpx-PRESET.json.
A dry check, in about two minutes on 2 cores: --size 32 --minutes 0.2 --set eval.num_samples=500 --set eval.classifier_epochs=1
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gan import checkpoint, sampling  # noqa: E402
from gan.data.reader import load_split, sample_rows  # noqa: E402
from gan.images import grid  # noqa: E402
from tests.benchmarks.pipeline_memory import mib, watch  # noqa: E402
from tests.benchmarks.time_to_quality import DEFAULT, final_line, run_args  # noqa: E402

SIZES = (32, 64, 128)  # the bundled crops are 128 px: ingest only shrinks them
GRID = 64  # images in each half of the picture, 8 x 8
TRAIN_WORKER = "RayTrainWorker"  # in the process name Ray gives a training worker (ray::RayTrainWorker...)


def side_by_side(checkpoint_dir: Path, dataset: Path, path: Path, seed: int = 0) -> Path:
    """A grid of GRID samples of the checkpoint's EMA generator, beside one of GRID held-out real images of the dataset."""
    G, _, latent = checkpoint.ema_generator(checkpoint.load(checkpoint_dir))
    fake = sampling.random_inputs(latent, GRID, seed).generate(G, latent).detach().numpy()  # [GRID, C, H, W] in [0, 1]
    heldout = json.loads((dataset / "manifest.json").read_text())["rows"]["heldout"]
    real, _ = load_split(dataset, "heldout", sample_rows(heldout, GRID, seed))  # [GRID, C, H, W] uint8
    left, right = grid(fake), grid(real)
    picture = Image.new(left.mode, (left.width + 16 + right.width, max(left.height, right.height)), "white")
    picture.paste(left, (0, 0))
    picture.paste(right, (left.width + 16, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, choices=SIZES, default=32, help="data.image_size")
    parser.add_argument("--preset", default=None, help=f"a name from conf/presets/ (default: photo-SIZE), or '{DEFAULT}' (none: the recommended recipe)")
    parser.add_argument("--minutes", type=float, default=7.5, help="train.max_minutes")
    parser.add_argument("--config", type=Path, default=ROOT / "conf" / "pipeline.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="any other override, section.key=value (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    sets = ["data.source=bundled-photos", "data.channels=3", f"data.image_size={args.size}", f"train.max_minutes={args.minutes}",
            "registry.model_name=photos-gan", *args.sets]
    args.preset = args.preset or f"photo-{args.size}"
    command = run_args(args.preset, args.config.resolve(), sets)
    name = f"photos-{args.size}px-{args.preset}"
    print(f"[photos] $ {' '.join(command)}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-photos-") as folder:
        watched = watch(command, Path(folder), quiet=False)
        summaries = list(Path(folder, "gan-work", "runs").glob("*.json"))  # a run judged collapsed has one too (exit 3)
        summary = json.loads(summaries[0].read_text()) if summaries else {}
        if "report" not in summary:
            sys.exit(f"[photos] the run left no evaluation report (exit {watched['code']})")
        report = json.loads(Path(summary["report"]).read_text())
        picture = side_by_side(Path(summary["train"]["checkpoint"]), Path(summary["dataset"]), args.out / f"{name}.png")

    workers = [size for process, size in watched["by_name"].items() if TRAIN_WORKER in process]
    model, floor = report["model"]["fid"], report["real_vs_real"]["fid"]
    figures = {"size": args.size, "preset": args.preset, "overrides": sets, "exit": watched["code"], "fid": model, "floor": floor,
               "fid_over_floor": model / floor, "step": report["step"], "train_seconds": report["train_seconds"],
               "wall_seconds": round(watched["seconds"], 1), "worker_peak_rss_bytes": max(workers) if workers else None,
               "all_processes_peak_rss_bytes": watched["sum"]}
    (args.out / f"{name}.json").write_text(json.dumps(figures, indent=2))
    print("\n[photos] " + final_line(name, {"report": report, "wall": watched["seconds"]}))
    print(f"[photos] peak resident memory: training worker {mib(max(workers)) if workers else 'not seen'}, "
          f"all processes together {mib(watched['sum'])} (largest: {watched['largest'][1]}, {mib(watched['largest'][0])})")
    print(f"[photos] written: {picture} (samples left, held-out real crops right), {args.out / f'{name}.json'}")


if __name__ == "__main__":
    main()
