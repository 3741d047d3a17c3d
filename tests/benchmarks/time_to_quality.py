"""Benchmark: time to quality, the wall-clock seconds until the quick FID first reaches k x the real-vs-real floor.

Usage: .venv/bin/python tests/benchmarks/time_to_quality.py [--presets default,dcgan] [--fid-every 2] [--ks 10,5,3,2] [--max-minutes M]
       [--config conf/pipeline.yaml] [--extra-set section.key=value ...] [--out DIR]

For each preset, one after another, one `gan-pipeline run -c conf/pipeline.yaml [--preset NAME]` in a new empty
folder (nothing cached; `default` is conf/pipeline.yaml as it is, the recommended recipe), with a quick FID every
--fid-every epochs (train.fid_every_epochs). From the run's evaluation report: the real-vs-real floor (the report's
FID for held-out real images, at eval.num_samples) and the quick FIDs (the same extractor, train.fid_samples
generated images: keep the two counts equal, as the defaults do, or the ratio carries a small-sample bias). For each k
(--ks) the first quick FID at or under k x the floor, and when it came: `whole` is the seconds from the start of
the `gan-pipeline run` process to that quick FID (start-up, ingest, the feature classifier, Ray, training, the quick
FIDs before it), `training` its training seconds (the snapshot's clock, which leaves the quick FIDs out). One run each:
a quick FID is one fixed draw of latents, so the first crossing of a threshold is itself a noisy event.
Prints a markdown table and each preset's final FID / floor; writes DIR/table.md, DIR/time_to_quality.json,
DIR/time_to_quality.png (quick FID / floor against whole-pipeline seconds), each run's report and output.
The script itself, in about a minute: --config conf/smoke.yaml --fid-every 1 --extra-set train.fid_samples=500 --ks 300,150,2
(smoke.yaml scores 500 samples; its 2-epoch model gets nowhere near the floor).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gan.images import save_time_to_quality
from pipelines.compare import first_within, quality_curve
from pipelines.config import load_config, preset_path
from pipelines.errors import UNFIT

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("gan-pipeline"))
DEFAULT = "default"  # conf/pipeline.yaml as it is, no preset
KS = (10, 5, 3, 2)  # targets: k x the real-vs-real floor


def run_args(preset: str, config: Path, sets: list[str]) -> list[str]:
    """`gan-pipeline run` with a preset (none for DEFAULT), a config file and `--set` overrides."""
    return [CLI, "run", *([] if preset == DEFAULT else ["--preset", preset]), "-c", str(config), *[a for s in sets for a in ("--set", s)]]


def run(preset: str, config: Path, sets: list[str], out: Path) -> dict:
    """One `gan-pipeline run` in a fresh folder: its start time, wall seconds, summary and evaluation report."""
    args = run_args(preset, config, sets)
    with tempfile.TemporaryDirectory() as folder:
        started = time.time()
        done = subprocess.run(args, cwd=folder, capture_output=True, text=True)
        wall = time.time() - started
        (out / f"{preset}.log").write_text(f"$ {' '.join(args)}\n{done.stdout}\n{done.stderr}\n")
        summaries = list(Path(folder, "gan-work", "runs").glob("*.json"))
        # A run judged collapsed is evaluated and refused (exit UNFIT): it still has a time to quality ("not reached").
        if done.returncode not in (0, UNFIT) or not summaries:
            sys.exit(f"{preset}: run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        summary = json.loads(summaries[0].read_text())
        if "report" not in summary:
            sys.exit(f"{preset}: no evaluation report (exit {done.returncode}):\n{done.stderr[-3000:]}")
        shutil.copy(summary["report"], out / f"{preset}-report.json")
        report = json.loads(Path(summary["report"]).read_text())
    print(f"[time-to-quality] {preset}: {wall:.0f} s wall, exit {done.returncode}", flush=True)
    return {"started": started, "wall": wall, "summary": summary, "report": report}


def curve_of(name: str, result: dict) -> list[dict]:
    """The run's quick FIDs over the floor, each with `whole_seconds`: since its `gan-pipeline run` started."""
    curve = quality_curve(result["report"])
    assert all("unix" in q for q in curve), f"{name}: quick FIDs without a wall-clock time (a checkpoint from older code?)"
    return [{**q, "whole_seconds": round(q["unix"] - result["started"], 2)} for q in curve]


def crossings(name: str, curve: list[dict], ks: list[float]) -> list[dict]:
    """One row per k: when the run's quick FID first reached k x the floor, or None fields when it never did."""
    rows = []
    for k in ks:
        q = first_within(curve, k)
        rows.append({"preset": name, "k": k, "whole_seconds": None if q is None else round(q["whole_seconds"], 1),
                     "train_seconds": None if q is None else q["seconds"], "step": None if q is None else q["step"],
                     "fid_over_floor": None if q is None else round(q["fid_over_floor"], 2)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| preset | k × floor | whole pipeline s | training s | step | quick FID ÷ floor |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        figures = ("not reached", "", "", "") if r["step"] is None else (
            f"{r['whole_seconds']:.0f}", f"{r['train_seconds']:.0f}", str(r["step"]), f"{r['fid_over_floor']:.2f}")
        lines.append(f"| {r['preset']} | {r['k']:g} | " + " | ".join(figures) + " |")
    return "\n".join(lines) + "\n"


def final_line(name: str, result: dict) -> str:
    """The full evaluation's FID against the floor, what the run spent, and its last quick FID."""
    report, curve = result["report"], quality_curve(result["report"])
    model, floor = report["model"], report["real_vs_real"]
    last = f"{len(curve)} quick FIDs, the last {curve[-1]['fid_over_floor']:.1f}× the floor" if curve else "no quick FID"
    return (f"{name}: final FID {model['fid']:.2f} = {model['fid'] / floor['fid']:.1f}× the floor {floor['fid']:.2f} "
            f"(step {report['step']}, {report['train_seconds']:.0f} s training, {result['wall']:.0f} s whole run); {last}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=DEFAULT, help=f"comma-separated: '{DEFAULT}' (no preset) or names from conf/presets/")
    parser.add_argument("--config", type=Path, default=ROOT / "conf" / "pipeline.yaml")
    parser.add_argument("--fid-every", type=int, default=2, help="train.fid_every_epochs: a quick FID every N epochs")
    parser.add_argument("--ks", default=",".join(map(str, KS)), help="the targets, k x the real-vs-real floor, comma-separated")
    parser.add_argument("--max-minutes", type=float, default=None, help="train.max_minutes (default: the config's)")
    parser.add_argument("--extra-set", action="append", default=[], help="any other override, section.key=value (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gan-time-to-quality"))
    args = parser.parse_args()
    args.config = args.config.resolve()  # each run starts in a folder of its own
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    ks = [float(k) for k in args.ks.split(",")]
    budget = [] if args.max_minutes is None else [f"train.max_minutes={args.max_minutes}"]
    sets = [f"train.fid_every_epochs={args.fid_every}", *budget, *args.extra_set]
    for preset in presets:  # every preset's config resolved before the first run: a typo fails now, not after an hour
        cfg = load_config(([] if preset == DEFAULT else [preset_path(preset)]) + [args.config], sets)
        if cfg.train.fid_samples != cfg.eval.num_samples:
            print(f"[time-to-quality] {preset}: train.fid_samples {cfg.train.fid_samples} != eval.num_samples {cfg.eval.num_samples}: "
                  "the quick FID and the floor have different small-sample biases", flush=True)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)

    results = {preset: run(preset, args.config, sets, args.out) for preset in presets}
    curves = {name: curve_of(name, result) for name, result in results.items()}
    rows = [row for name in results for row in crossings(name, curves[name], ks)]
    text = table(rows) + "\n" + "\n".join(final_line(name, result) for name, result in results.items()) + "\n"
    (args.out / "table.md").write_text(text)
    (args.out / "time_to_quality.json").write_text(json.dumps({
        "config": str(args.config), "overrides": sets, "rows": rows,
        "runs": {name: {"wall_seconds": round(r["wall"], 1), "floor": r["report"]["real_vs_real"]["fid"],
                        "fid": r["report"]["model"]["fid"], "train_seconds": r["report"]["train_seconds"], "step": r["report"]["step"],
                        "quick_fid": curves[name]} for name, r in results.items()},
    }, indent=2))
    wall_curves = {name: [{**q, "seconds": q["whole_seconds"]} for q in curve] for name, curve in curves.items()}  # x: the whole run
    plot = save_time_to_quality(wall_curves, args.out / "time_to_quality.png", targets=tuple(ks),
                                xlabel="seconds since `gan-pipeline run` started (whole pipeline)")
    print(f"\n{text}\nwritten: {args.out / 'table.md'}, {args.out / 'time_to_quality.json'}, {plot}")


if __name__ == "__main__":
    main()
