"""Bad data sources through the CLI: one clear line, exit 2, no traceback, nothing half-written, no registry.

What the listing and the first images show is caught before any service starts (each case its own run of the
CLI's `main`); what only reading every image shows stops the ingest stage of a real run, with the quarantine
report naming each bad file.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan.data.formats.idx import write_idx
from tests.test_ingest import distinct_images, png_bytes

CLI = str(Path(sys.executable).with_name("gan-pipeline"))



def pngs(folder: Path, count: int, start: int = 0, size: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, pixels in enumerate(distinct_images(count + start, size)[start:]):
        (folder / f"{k + start:03d}.png").write_bytes(png_bytes(pixels))


def classes(root: Path, per_class: int = 6) -> Path:
    for k, name in enumerate(("a", "b")):
        pngs(root / name, per_class, start=per_class * k)
    return root


def idx_pair(root: Path, count: int = 20, labels: int | None = None) -> Path:
    root.mkdir(parents=True)
    write_idx(root / "train-images-idx3-ubyte", distinct_images(count))
    write_idx(root / "train-labels-idx1-ubyte", np.arange(labels if labels is not None else count, dtype=np.uint8) % 2)
    return root


def spoil_file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def empty_folder(root: Path) -> Path:
    root.mkdir()
    return root


def one_image_class(root: Path) -> Path:
    classes(root)
    pngs(root / "lonely", 1, start=50)
    return root


def symlink_loop(root: Path) -> Path:
    classes(root)
    (root / "a" / "loop.png").symlink_to(root / "a" / "loop2.png")
    (root / "a" / "loop2.png").symlink_to(root / "a" / "loop.png")
    return root


def looping_source(root: Path) -> Path:
    root.mkdir()
    (root / "src").symlink_to(root / "src2")
    (root / "src2").symlink_to(root / "src")
    return root / "src"


def with_extra(make: Callable[[Path], Path], name: str, content: bytes) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        make(root)
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return root
    return build


def npz(arrays: dict) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        root.mkdir()
        np.savez(root / "d.npz", **arrays)
        return root / "d.npz"
    return build


def parquet_without_column(root: Path) -> Path:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    root.mkdir()
    pq.write_table(pa.table({"img": [png_bytes(i) for i in distinct_images(20)]}), root / "d.parquet")
    return root / "d.parquet"


PNG = png_bytes(distinct_images(1)[0])
# Found from the listing and the first images, before any service starts: (id, source builder, --set values, message)
LISTING = [
    ("missing source", lambda r: r / "nowhere", [], "is neither a bundled data set"),
    ("empty source folder", empty_folder, [], "no images (.png, .jpg, .jpeg, .webp, .bmp), class folders of them"),
    ("unknown URI scheme", lambda r: "ftp://host/images", [], "has scheme 'ftp'; expected a path or one of file://"),
    ("source is a text file", lambda r: spoil_file(r.mkdir() or r / "notes.txt", b"hello"), [], "is a file but not an .npz or .parquet"),
    ("source is a symlink loop", looping_source, [], "cannot be read: a symbolic link that loops or points to nothing"),
    ("stray file beside class folders", with_extra(classes, "README.txt", b"x"), [], "README.txt: a file beside class folders"),
    ("non-image in a class folder", with_extra(classes, "a/notes.txt", b"x"), [], "notes.txt: not an image file"),
    ("empty class folder", lambda r: (classes(r), (r / "c").mkdir(), r)[-1], [], "c: class folder holds no images"),
    ("nested folder in a class", lambda r: (classes(r), (r / "a" / "sub").mkdir(), r)[-1], [], "sub: a folder inside a class folder"),
    ("1-image class", one_image_class, [], "class 'lonely': 1 image(s); with data.holdout_fraction 0.2 a class needs at least 3"),
    ("symlink loop in a class", symlink_loop, [], "loop.png: a symbolic link to nothing readable"),
    ("class outside the declared classes", classes, ["data.classes=[a]"], "class 'b' is not one of data.classes"),
    ("IDX wrong magic", lambda r: (idx_pair(r), spoil_file(r / "train-images-idx3-ubyte", b"\x08\x08\x08\x03" + bytes(12)), r)[-1], [],
     "not an IDX file (expected magic bytes 00 00 <type> <ndim>, got 08080803)"),
    ("IDX labels do not match images", lambda r: idx_pair(r, 20, labels=19), [], "expected 20 labels to match train-images-idx3-ubyte"),
    ("IDX images without labels", lambda r: (idx_pair(r), (r / "train-labels-idx1-ubyte").unlink(), r)[-1], [], "no matching labels file"),
    ("npz without images", npz({"pictures": distinct_images(4)}), [], "no 'images' array (it holds 'pictures')"),
    ("npz with float images", npz({"images": distinct_images(4).astype(np.float32)}), [], "'images' has dtype float32; expected uint8"),
    ("npz labels of the wrong length", npz({"images": distinct_images(20), "labels": np.zeros(3, np.int64)}), [],
     "'labels' has dtype int64 and shape (3,); expected 20 integers >= 0"),
    ("Parquet without the image column", parquet_without_column, [], "no column 'image' (data.image_column); it has 'img'"),
]
# Found only by reading every image (the ingest stage): all in one source, one run, each asserted in the report.
IN_IMAGES = {
    "a/empty.png": (b"", "empty file (0 bytes)"),
    "b/cut.png": (PNG[:45], "cannot decode"),
    "b/fake.jpg": (b"<html>not a jpeg</html>", "cannot decode"),
    "a/deep.png": ("16-bit", "pixel mode 'I"),
    "b/copy.png": ("copy", "the same image as"),
    "a/small.png": (png_bytes(np.zeros((4, 4), np.uint8)), "4x4 is smaller than data.image_size = 8"),
}
ARGS = ["--set", "model.arch=mlp", "--set", "model.conditional=false", "--set", "train.batch_size=2", "--set", "ray.num_workers=1"]


def run_cli(workdir: Path, *args: str) -> tuple[int, str]:
    """`gan-pipeline` in this process (the same `main` the console script calls): (exit code, stdout + stderr).
    The environment the CLI sets for its services is put back afterwards."""
    from pipelines.cli import main as cli  # noqa: PLC0415

    saved, argv, cwd = dict(os.environ), sys.argv, os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.chdir(workdir)
        sys.argv = ["gan-pipeline", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
            cli.main()
    finally:
        os.chdir(cwd)
        sys.argv = argv
        os.environ.clear()
        os.environ.update(saved)
    return done.value.code, out.getvalue() + err.getvalue()


def nothing_written(workdir: Path) -> None:
    work = workdir / "gan-work"
    for folder in (work / "datasets", work / "scratch"):
        assert not folder.exists() or not list(folder.iterdir()), list(folder.iterdir())  # no dataset, no temporary
    assert not (work / "mlflow.db").exists()  # the registry was never opened


@pytest.mark.parametrize(("build", "extra", "expected"), [c[1:] for c in LISTING], ids=[c[0] for c in LISTING])
def test_a_bad_source_fails_before_any_service_starts(tmp_path: Path, build, extra: list[str], expected: str) -> None:  # noqa: ANN001
    source = build(tmp_path / "src")
    (tmp_path / "work").mkdir()
    code, output = run_cli(tmp_path / "work", "run", "--set", f"data.source={source}", *ARGS, *[a for v in extra for a in ("--set", v)])
    assert code == 2, output[-2000:]
    assert [line for line in output.splitlines() if line.strip()] == [next(line for line in output.splitlines() if expected in line)], output
    assert output.startswith("error: ") and "Traceback" not in output
    nothing_written(tmp_path / "work")


@pytest.mark.integration
def test_bad_images_stop_the_ingest_stage_with_every_one_in_the_report(tmp_path: Path) -> None:
    """The real CLI in its own process, Prefect flow and all: one line naming the first five and the report, exit 2."""
    root = classes(tmp_path / "src", per_class=8)
    for name, (content, _) in IN_IMAGES.items():
        if content == "16-bit":
            Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 900).save(root / name)
        else:
            (root / name).write_bytes((root / "a" / "001.png").read_bytes() if content == "copy" else content)
    env = {k: v for k, v in os.environ.items() if k not in ("GAN_PIPELINE_FAIL_AT", "MLFLOW_TRACKING_URI")}
    done = subprocess.run([CLI, "run", "--set", f"data.source={root}", "--set", "data.image_size=8", *ARGS], cwd=tmp_path,
                          env={**env, "PREFECT_HOME": str(tmp_path / ".prefect-home")}, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
    assert f"{root}: 6 bad inputs: " in errors[0] and "; and 1 more; every one is listed in " in errors[0]
    assert "Traceback" not in done.stdout + done.stderr
    report = json.loads(Path(errors[0].rsplit(" ", 1)[1]).read_text())
    found = {Path(i["input"]).relative_to(root).as_posix(): i["reason"] for i in report["inputs"]}
    if "a/001.png" in found:  # of two equal images, the one read later is the copy: the shuffle decides which
        found["b/copy.png"] = found.pop("a/001.png")
    assert {name: reason for name, (_, reason) in IN_IMAGES.items() if reason not in found.get(name, "")} == {}, found
    assert len(found) == 6 and "not a PNG, JPEG, WebP or BMP image" in found["b/fake.jpg"]
    nothing_written(tmp_path)
