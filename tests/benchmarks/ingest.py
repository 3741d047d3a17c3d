"""Ingest throughput and memory: an .npz source streamed into Parquet shards, against `np.save` of the same arrays.

    .venv/bin/python tests/benchmarks/ingest.py [--repeats 3] [--png 20000]

For 60 000 greyscale 28x28 and 20 000 RGB 64x64 images generated on the fly (random pixels, so none repeat) it
prints rows/s of `np.save` of the image array, of ingest (open the .npz, split, shuffle, check for duplicates, write
the shards and manifest) and of ingest plus the source checksum the stage also computes, each ingest/np.save as a
ratio measured side by side (target >= 0.5); then the peak resident memory of a fresh process ingesting 6 000,
60 000, 240 000 and 480 000 rows (it stops growing once both splits have filled a row group: bounded by the
row-group size, not the data set); then image files per second decoding a folder of PNGs
with 1 and 2 processes. Timings are medians of --repeats runs, files in the page cache.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gan.data.inputs import source_checksum  # noqa: E402
from gan.data.shaping import Shaping  # noqa: E402
from gan.data.sources import open_source  # noqa: E402
from gan.data.writer import WriteOptions, write_dataset  # noqa: E402

CHILD = """
import json, resource, sys, tempfile
from pathlib import Path
from gan.data.shaping import Shaping
from gan.data.sources import open_source
from gan.data.writer import WriteOptions, write_dataset
src, out = sys.argv[1], Path(sys.argv[2])
with tempfile.TemporaryDirectory() as scratch:
    rows = open_source(src, Shaping(channels=int(sys.argv[3])), Path(scratch))
    write_dataset(rows, out, 0.2, 0, "bench", WriteOptions(workers=int(sys.argv[4])))
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))  # ru_maxrss would carry the parent's over exec
print(json.dumps({"peak_mib": int(hwm.split()[1]) / 1024}))
"""


def median_seconds(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def arrays(count: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    images = np.random.default_rng(0).integers(0, 256, (count, *shape), dtype=np.uint8)
    return images, np.arange(count) % 10


def ingest_once(source: Path, channels: int, out: Path, workers: int = 1, checksum: bool = False) -> None:
    shutil.rmtree(out, ignore_errors=True)
    digest = source_checksum(str(source)) if checksum else "bench"
    with tempfile.TemporaryDirectory() as scratch:
        rows = open_source(str(source), Shaping(channels=channels), Path(scratch))
        write_dataset(rows, out, 0.2, 0, digest, WriteOptions(workers=workers))


def child_peak(source: Path, channels: int, out: Path, workers: int = 1) -> float:
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", CHILD, str(source), str(out), str(channels), str(workers)],
                          capture_output=True, text=True, check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


def throughput(tmp: Path, name: str, count: int, shape: tuple[int, ...], repeats: int) -> dict:
    images, labels = arrays(count, shape)
    source = tmp / f"{name}.npz"
    np.savez(source, images=images, labels=labels)
    save = median_seconds(lambda: np.save(tmp / f"{name}.npy", images), repeats)
    save_sync = median_seconds(lambda: save_synced(tmp / f"{name}.npy", images), repeats)
    channels = shape[-1] if len(shape) == 3 else 1
    ingest = median_seconds(lambda: ingest_once(source, channels, tmp / f"{name}-ds"), repeats)
    with_checksum = median_seconds(lambda: ingest_once(source, channels, tmp / f"{name}-ds", checksum=True), repeats)
    return {"name": name, "rows": count, "np_save_rows_s": count / save, "ingest_rows_s": count / ingest, "ratio": save / ingest,
            "np_save_sync_rows_s": count / save_sync, "ratio_sync": save_sync / ingest,
            "ingest_checksum_rows_s": count / with_checksum, "ratio_with_checksum": save_sync / with_checksum}


def save_synced(path: Path, images: np.ndarray) -> None:
    """np.save made durable as ingest's shards are (fsync), the fair baseline for a write that must survive a crash."""
    with open(path, "wb") as f:
        np.save(f, images)
        f.flush()
        os.fsync(f.fileno())


def png_folder(tmp: Path, count: int) -> Path:
    folder = tmp / "png"
    for k, pixels in enumerate(arrays(count, (28, 28))[0]):
        (folder / str(k % 10)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / str(k % 10) / f"{k:06d}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--png", type=int, default=20000, help="PNG files for the decoding figure (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as name:
        tmp = Path(name)
        print("source: .npz written by numpy.savez; ingest = open + split + shuffle + duplicate check + shards + manifest")
        print("ratio = ingest rows/s / np.save rows/s; 'synced' = np.save followed by fsync, as ingest syncs its shards")
        print(f"{'data set':<12}{'rows':>7}{'np.save':>11}{'+fsync':>11}{'ingest':>10}{'ratio':>7}{'vs synced':>10}"
              f"{'+checksum':>11}{'vs synced':>10}   (rows/s)")
        for label, count, shape in (("28x28 grey", 60_000, (28, 28)), ("64x64 RGB", 20_000, (64, 64, 3))):
            r = throughput(tmp, label.replace(" ", "-").replace("x", "_"), count, shape, args.repeats)
            print(f"{label:<12}{count:>7}{r['np_save_rows_s']:>11,.0f}{r['np_save_sync_rows_s']:>11,.0f}{r['ingest_rows_s']:>10,.0f}"
                  f"{r['ratio']:>7.2f}{r['ratio_sync']:>10.2f}{r['ingest_checksum_rows_s']:>11,.0f}{r['ratio_with_checksum']:>10.2f}")

        group = WriteOptions().row_group_mb
        print("\npeak resident memory of a fresh process ingesting an .npz (28x28 grey); the writer buffers a row group per"
              f" split (row_group_mb = {group:g} MiB of pixels, {int(group * 2**20) // 784} rows)")
        for count in (6_000, 60_000, 240_000, 480_000):
            images, labels = arrays(count, (28, 28))
            np.savez(tmp / f"mem-{count}.npz", images=images, labels=labels)
            del images
            peak = child_peak(tmp / f"mem-{count}.npz", 1, tmp / f"mem-{count}-ds")
            print(f"  {count:>6} rows ({count * 784 / 2**20:5.1f} MiB of pixels): peak {peak:6.0f} MiB")

        if args.png:
            folder = png_folder(tmp, args.png)
            print(f"\ndecoding a folder of {args.png} PNG files (28x28, 10 class folders)")
            for workers in (1, 2):
                seconds = median_seconds(lambda w=workers: ingest_once(folder, 1, tmp / "png-ds", workers=w), args.repeats)
                print(f"  {workers} process(es): {args.png / seconds:8,.0f} files/s")
    print(f"\n(this process's own peak: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
