"""Real colour photos: the bundled set `bundled-photos` (crops of scikit-learn's two sample photos), the same crops as a
folder of JPEG files read by the image-folder code, and one end-to-end run on such a folder at 32 px in colour with the
real Ray, Prefect and MLflow: every test before it used grey digits."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan.data.formats.bundled import BUNDLED
from gan.data.rows import Source
from gan.data.shaping import Shaping
from gan.data.sources import load_source, peek_source
from gan.hashing import sha256
from tests.photos import write_photos
from tests.test_pipeline import SMOKE, cli, summaries

COLOUR = Shaping(channels=3)


@pytest.fixture(scope="module")
def photos() -> Source:
    return load_source("bundled-photos", COLOUR)


def test_bundled_photos_are_balanced_colour_crops_of_both_photos(photos: Source) -> None:
    assert photos.images.shape == (3000, 3, 128, 128) == (BUNDLED["bundled-photos"].rows, *BUNDLED["bundled-photos"].image_shape)
    assert photos.images.dtype == np.uint8 and photos.class_names == ("china", "flower")
    assert np.bincount(photos.labels).tolist() == [1500, 1500]
    assert len({sha256(image.tobytes()) for image in photos.images}) == 3000  # no crop twice: ingest refuses duplicates
    channels = photos.images.reshape(3000, 3, -1).astype(np.float32)
    assert (channels.std(axis=2).mean(axis=1) > 5).mean() > 0.99  # textured pictures, not flat patches
    assert np.abs(channels.mean(axis=2) - channels.mean(axis=(1, 2))[:, None]).mean() > 5  # colour, not grey in 3 channels
    assert peek_source("bundled-photos", 0.2, Shaping(channels=3, size=32)) == ((3, 32, 32), 2400)
    small = load_source("bundled-photos", Shaping(channels=3, size=32)).images
    assert small.shape == (3000, 3, 32, 32) and len({sha256(image.tobytes()) for image in small}) == 3000  # none alike once shrunk


def test_bundled_photos_are_the_same_bytes_on_every_load(photos: Source) -> None:
    again = load_source("bundled-photos", COLOUR)
    assert sha256(photos.images.tobytes()) == sha256(again.images.tobytes())
    assert np.array_equal(photos.labels, again.labels)


def test_photo_files_read_back_as_the_crops_they_were_written_from(photos: Source, tmp_path: Path) -> None:
    """Class folders named for the photos give their labels and names; a flat folder is unlabelled; JPEG changes
    the pixels by a few levels only."""
    write_photos(tmp_path / "classes", 10, size=128)
    assert sorted(p.relative_to(tmp_path / "classes").parent.name for p in (tmp_path / "classes").rglob("*.jpg")) == ["china"] * 5 + ["flower"] * 5
    read = load_source(str(tmp_path / "classes"), Shaping(channels=3, size=128))
    assert read.class_names == ("china", "flower") and read.labels.tolist() == [0] * 5 + [1] * 5
    written = photos.images[np.r_[0:5, 1500:1505]].astype(np.int16)
    assert np.abs(read.images.astype(np.int16) - written).mean() < 4
    flat = load_source(str(write_photos(tmp_path / "flat", 6, size=32, labelled=False)), Shaping(channels=3, size=32))
    assert flat.images.shape == (6, 3, 32, 32) and not flat.labelled


# One colour run end to end, smoke-sized (on top of conf/smoke.yaml): 800 JPEGs of 32 px in class folders, an unconditional
# narrow DCGAN with ADA (p free to move fast) on the data mirrored, on 1 worker for 2 epochs of 20 steps; a 160-sample
# evaluation, measured with the self-supervised encoder as two classes are too few for a classifier's features (FID on
# its 128-d features needs more than 128 samples: 160 held out).
PHOTO_RUN = [
    "data.channels=3", "data.image_size=32", "data.mirror=true", "model.arch=dcgan", "model.g_width=8", "model.d_width=8",
    "reg.ada=true", "reg.ada_images=2000", "eval.ssl_epochs=2",
    "train.batch_size=32", "train.sample_every_steps=0", "ray.num_workers=1", "eval.num_samples=160", "eval.classifier_epochs=1",
    "eval.fid_draws=0", "eval.classifier_augment=false", "registry.model_name=photos",
]


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("photos")
    folder = write_photos(workdir / "photos", 800, size=32)
    done = cli(workdir, "run", "-c", SMOKE, *[a for s in (f"data.source={folder}", *PHOTO_RUN) for a in ("--set", s)])
    assert done.returncode == 0, done.stderr[-3000:]
    return {"workdir": workdir, "summary": summaries(workdir)[-1]}


@pytest.mark.integration
def test_a_colour_run_trains_evaluates_and_registers_a_32px_rgb_model(colour_run: dict) -> None:
    summary = colour_run["summary"]
    manifest = json.loads((Path(summary["dataset"]) / "manifest.json").read_text())
    assert manifest["image_shape"] == [3, 32, 32] and manifest["class_names"] == ["china", "flower"]
    assert manifest["rows"] == {"train": 640, "heldout": 160}
    report = json.loads(Path(summary["report"]).read_text())
    assert math.isfinite(report["model"]["fid"]) and report["model"]["fid"] > report["real_vs_real"]["fid"]
    assert report["feature_network"] == "selfsupervised" and report["yardstick"]["extractor"].startswith("selfsupervised-")
    # data.mirror: the reference holds each of the 640 training crops and its mirror image, as the run trained on them
    assert report["yardstick"]["mirror"] is True and report["yardstick"]["reference_rows"] == 2 * 640
    grid = Image.open(Path(summary["report"]).parent / "samples.png")
    pixels = np.asarray(grid)
    assert grid.mode == "RGB" and np.abs(pixels[..., 0].astype(int) - pixels[..., 2]).max() > 0  # colour samples, drawn as colour

    import mlflow  # noqa: PLC0415 - only this test pays for the import

    registered = summary["registered"]
    mlflow.set_tracking_uri(f"sqlite:///{colour_run['workdir'] / 'gan-work' / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model(f"models:/{registered['model_name']}/{registered['version']}")
        samples = model.predict(np.random.default_rng(0).standard_normal((16, 100)).astype(np.float32))
    finally:
        mlflow.set_tracking_uri(None)
    assert samples.shape == (16, 3, 32, 32) and 0 <= samples.min() and samples.max() <= 1
    assert samples.std(axis=0).mean() > 1e-3 and samples.std(axis=(0, 2, 3)).min() > 1e-3  # varies by latent, in every channel
