"""Peak memory of a whole pipeline run by data-set size: 5 000 against 60 000 images (or --sizes), `train.cache_shard` off.

    .venv/bin/python tests/benchmarks/pipeline_memory.py [--sizes 5000,60000,240000]

Each size is an .npz of 28x28 greyscale images (MNIST digits from the bundled set with a little noise, so no
two are alike, labels kept), run with `gan-pipeline run -c conf/smoke.yaml` in a fresh working folder. The
resident memory of the CLI process and every process it starts (Prefect's server, Ray's GCS, raylet and
workers) is summed every 0.2 s; the peak of that sum (with the four largest processes at that moment), of the private
memory (RssAnon: without Ray's shared object store, which the plain sum counts once per process mapping it) and of the
largest single process (named) are printed per size, with the ratios to the first size.
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

from gan.data.sources import load_source  # noqa: E402

CLI = str(Path(sys.executable).with_name("gan-pipeline"))


def make_source(path: Path, count: int) -> None:
    mnist = load_source("bundled-mnist")
    pick = np.arange(count) % len(mnist.labels)
    noise = np.random.default_rng(0).integers(0, 3, (count, 1, 28, 28), dtype=np.uint8)
    np.savez(path, images=np.clip(mnist.images[pick].astype(np.int16) + noise, 0, 255).astype(np.uint8), labels=mnist.labels[pick])


def tree_rss(root: int) -> list[tuple[int, int, str]]:
    """(resident bytes, private bytes, name) of a process and each of its descendants, from /proc: VmRSS, and RssAnon,
    which leaves out shared memory (Ray's object store, mapped by many processes) and file pages."""
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
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
            sizes.append((int(status["VmRSS"].split()[0]) * 1024, int(status["RssAnon"].split()[0]) * 1024, process_name(pid)))
        except (OSError, KeyError, ValueError):
            continue
    return sizes


def process_name(pid: int) -> str:
    """What a process is, in a few words: Ray names its workers in their command line (ray::RayTrainWorker...)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    return " ".join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words[:3]) if w)[:60]


def peak_of_run(source: Path, workdir: Path) -> dict:
    args = [CLI, "run", "-c", str(ROOT / "conf" / "smoke.yaml"), "--set", f"data.source={source}", "--set", "train.cache_shard=false",
            "--set", "train.collapse_ratio=0"]  # a larger set's two epochs may collapse; registered all the same, as on the smaller
    watched = watch(args, workdir)
    if watched["code"] != 0:
        sys.exit(f"run on {source} failed ({watched['code']}): {watched['stderr'][-2000:]}")
    return watched


def watch(args: list[str], workdir: Path, quiet: bool = True) -> dict:
    """Run `args` in `workdir`, polling the resident memory of it and every process it starts every 0.2 s. Returns the
    peaks: `sum` and `private` over all processes (with the four largest at each), the `largest` single process, each
    process name's own (`by_name`: resident bytes); and the exit `code`, `stderr` (when `quiet`; otherwise the output
    goes to this terminal) and `seconds`."""
    start, peak = time.time(), {"sum": 0, "private": 0, "largest": (0, ""), "by_name": {}}
    quiet_out = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE} if quiet else {}
    with subprocess.Popen(args, cwd=workdir, text=True, **quiet_out) as proc:
        while proc.poll() is None:
            sizes = tree_rss(proc.pid)
            total, private = sum(s[0] for s in sizes), sum(s[1] for s in sizes)
            if total > peak["sum"]:
                peak["sum"], peak["at_sum_peak"] = total, sorted(sizes, reverse=True)[:4]
            if private > peak["private"]:
                peak["private"], peak["at_private_peak"] = private, sorted(sizes, key=lambda s: -s[1])[:4]
            peak["largest"] = max([peak["largest"], *((size, name) for size, _, name in sizes)])
            for size, _, name in sizes:
                peak["by_name"][name] = max(size, peak["by_name"].get(name, 0))
            time.sleep(0.2)
        err = proc.stderr.read() if quiet else ""
    return {**peak, "code": proc.returncode, "stderr": err, "seconds": time.time() - start}


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,60000", help="data-set sizes, comma-separated; ratios are to the first")
    sizes = [int(n) for n in parser.parse_args().sizes.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as name:
        tmp = Path(name)
        for count in sizes:
            make_source(tmp / f"{count}.npz", count)
            (tmp / f"work-{count}").mkdir()
            results[count] = r = peak_of_run(tmp / f"{count}.npz", tmp / f"work-{count}")
            print(f"{count:>6} images: peak {mib(r['sum'])} over all processes ({mib(r['private'])} private), largest process "
                  f"{mib(r['largest'][0])} ({r['largest'][1]}) ({r['seconds']:.0f} s); at the peak: "
                  + ", ".join(f"{name} {mib(size)}" for size, _, name in r["at_sum_peak"])
                  + "; at the private peak: " + ", ".join(f"{name} {mib(own)}" for _, own, name in r["at_private_peak"]), flush=True)
    small = results[sizes[0]]
    for count in sizes[1:]:
        large = results[count]
        print(f"ratio {count} / {sizes[0]}: {large['sum'] / small['sum']:.2f} over all processes, "
              f"{large['private'] / small['private']:.2f} private, {large['largest'][0] / small['largest'][0]:.2f} for the largest")


if __name__ == "__main__":
    main()
