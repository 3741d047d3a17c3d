"""Benchmark: the fixed overhead every run pays, measured on full runs of conf/smoke.yaml in a fresh folder.

Usage: .venv/bin/python tests/benchmarks/overhead.py [--repeat 2]

Each repeat runs `gan-pipeline run -c conf/smoke.yaml` in a new empty folder (nothing cached), then
reads the run summary's overhead parts: the checks before any service, the services (Prefect's temporary server and
Ray, started side by side, the imports, the flow started), what the train stage still waited for Ray,
TorchTrainer.fit() -> first training batch (controller, worker group, process group, the workers' data), and MLflow
model logging + registration. The smoke run's GAN work is ~2 s, so the rest is overhead. Extra `gan-pipeline run`
arguments after `--` (e.g. `-- --set ray.dashboard=true`) go to every run.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def one_run(extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        started = time.time()
        done = subprocess.run(
            [str(Path(sys.executable).with_name("gan-pipeline")), "run", "-c", str(ROOT / "conf" / "smoke.yaml"), *extra],
            cwd=folder, capture_output=True, text=True,
        )
        wall = time.time() - started
        if done.returncode != 0:
            sys.exit(f"run failed:\n{done.stderr[-3000:]}")
        summary = json.loads(next(Path(folder, "gan-work", "runs").glob("*.json")).read_text())
    return {**summary["overhead"], "wall_seconds": wall, "stages": summary["stages"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more `gan-pipeline run` arguments, after --")
    args = parser.parse_args()
    runs = [one_run(args.extra) for _ in range(args.repeat)]
    parts = [k for k, v in runs[0].items() if k.endswith("_seconds") and k != "wall_seconds" and isinstance(v, (int, float))]
    print(f"{'part':<28}" + "".join(f"{f'run {i + 1}':>10}" for i in range(len(runs))) + f"{'median':>10}")
    for part in (*parts, "wall_seconds"):
        values = [r[part] for r in runs]
        print(f"{part:<28}" + "".join(f"{v:>10.1f}" for v in values) + f"{statistics.median(values):>10.1f}")
    fixed = [sum(r[p] for p in parts) for r in runs]
    print(f"{'fixed overhead (sum)':<28}" + "".join(f"{v:>10.1f}" for v in fixed) + f"{statistics.median(fixed):>10.1f}")
    for name in runs[-1]["stages"]:
        print(f"stage {name:<22}" + "".join(f"{r['stages'][name]['seconds']:>10.1f}" for r in runs))


if __name__ == "__main__":
    main()
