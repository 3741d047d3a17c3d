"""Peak memory of a whole pipeline run by data-set size: 5 000 against 60 000 images, `train.cache_shard` off.

    .venv/bin/python tests/benchmarks/pipeline_memory.py [--small 5000] [--large 60000]

Each size is an .npz of 28x28 greyscale images (MNIST digits from the bundled set with a little noise, so no
two are alike, labels kept), run with `gan-pipeline run -c conf/smoke.yaml` in a fresh working folder. The
resident memory of the CLI process and every process it starts (Prefect's server, Ray's GCS, raylet and
workers) is summed every 0.2 s; the peak of that sum and of the largest single process (named) are printed per size,
with the large/small ratio.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gan import data  # noqa: E402

CLI = str(Path(sys.executable).with_name("gan-pipeline"))


def make_source(path: Path, count: int) -> None:
    mnist = data.load_source("bundled-mnist")
    pick = np.arange(count) % len(mnist.labels)
    noise = np.random.default_rng(0).integers(0, 3, (count, 1, 28, 28), dtype=np.uint8)
    np.savez(path, images=np.clip(mnist.images[pick].astype(np.int16) + noise, 0, 255).astype(np.uint8), labels=mnist.labels[pick])


def tree_rss(root: int) -> tuple[int, int, str]:
    """(sum, largest, the largest one's name) of the resident bytes of a process and its descendants, from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree, grew = tree | more, bool(more)
    sizes = []
    for pid in tree:
        try:
            rss = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))
            sizes.append((int(rss.split()[1]) * 1024, pid))
        except (OSError, StopIteration):
            continue
    largest, pid = max(sizes, default=(0, 0))
    return sum(size for size, _ in sizes), largest, process_name(pid)


def process_name(pid: int) -> str:
    """What a process is, in a few words: Ray names its workers in their command line (ray::RayTrainWorker...)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    return " ".join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words[:3]) if w)[:60]


def peak_of_run(source: Path, workdir: Path) -> tuple[float, float, float, str]:
    args = [CLI, "run", "-c", str(ROOT / "conf" / "smoke.yaml"), "--set", f"data.source={source}", "--set", "train.cache_shard=false"]
    start, peak_sum, peak_one, who = time.time(), 0, 0, ""
    with subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        while proc.poll() is None:
            total, largest, name = tree_rss(proc.pid)
            peak_sum = max(peak_sum, total)
            if largest > peak_one:
                peak_one, who = largest, name
            time.sleep(0.2)
        err = proc.stderr.read()
    if proc.returncode != 0:
        sys.exit(f"run on {source} failed ({proc.returncode}): {err[-2000:]}")
    return peak_sum / 2**20, peak_one / 2**20, time.time() - start, who


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--large", type=int, default=60000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as name:
        tmp = Path(name)
        for count in (args.small, args.large):
            make_source(tmp / f"{count}.npz", count)
            (tmp / f"work-{count}").mkdir()
            results[count] = peak_of_run(tmp / f"{count}.npz", tmp / f"work-{count}")
            total, largest, seconds, who = results[count]
            print(f"{count:>6} images: peak {total:7.0f} MiB over all processes, largest process {largest:6.0f} MiB "
                  f"({who}) ({seconds:.0f} s)", flush=True)
    (small, small_one, *_), (large, large_one, *_) = results[args.small], results[args.large]
    print(f"ratio {args.large} / {args.small}: {large / small:.2f} over all processes, {large_one / small_one:.2f} for the largest")


if __name__ == "__main__":
    main()
