"""Data: the IDX reader on good and corrupt files, the stratified split, the atomic Parquet dataset."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from gan import files
from gan.data.errors import DataError
from gan.data.formats.bundled import BUNDLED
from gan.data.formats.idx import write_idx
from gan.data.inputs import source_checksum
from gan.data.reader import iter_split, load_split, sample_rows
from gan.data.rows import Source
from gan.data.shaping import Shaping
from gan.data.sources import load_source, peek_source
from gan.data.writer import WriteOptions, stratified_split, write_dataset


def make_idx_dir(directory: Path, count: int = 40, size: int = 8, gz: bool = True, prefix: str = "train") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    images, labels = make_idx_dir(tmp_path, gz=gz)
    source = load_source(str(tmp_path))
    assert source.images.shape == (40, 1, 8, 8)
    np.testing.assert_array_equal(source.images[:, 0], images)
    np.testing.assert_array_equal(source.labels, labels)


def test_idx_dir_concatenates_train_and_test_pairs(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, count=30, prefix="train")
    make_idx_dir(tmp_path, count=10, prefix="t10k", gz=False)
    assert len(load_source(str(tmp_path)).labels) == 40


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda raw: b"PK\x03\x04" + raw[4:], "not an IDX file"),
        (lambda raw: raw[:-5], r"declares shape \(40, 8, 8\) \(2560 bytes\) but the file holds 2555"),
        (lambda raw: raw[:2] + b"\x0d" + raw[3:], "element type 0x0d is not supported"),
        (lambda raw: raw[:6], "truncated IDX header"),
    ],
)
def test_corrupt_idx_names_file_and_problem(tmp_path: Path, corrupt, expected: str) -> None:  # noqa: ANN001
    make_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match=expected) as err:
        load_source(str(tmp_path))
    assert str(path) in str(err.value)


def test_broken_gzip_and_missing_pieces(tmp_path: Path) -> None:
    make_idx_dir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03")[:-6])
    with pytest.raises(DataError, match="cannot read"):
        load_source(str(tmp_path))
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no matching labels file"):
        load_source(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no images .*, '\*-images-idx3-ubyte"):
        load_source(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="neither a bundled data set"):
        load_source(str(tmp_path / "missing"))


def test_label_count_mismatch(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(39, np.uint8))
    with pytest.raises(DataError, match="expected 40 labels"):
        load_source(str(tmp_path))


def test_stratified_split_holds_out_the_same_share_of_each_class() -> None:
    labels = np.repeat(np.arange(10), 50)
    heldout = stratified_split(labels, 0.2, seed=0)
    assert heldout.sum() == 100
    assert all(heldout[labels == k].sum() == 10 for k in range(10))
    np.testing.assert_array_equal(heldout, stratified_split(labels, 0.2, seed=0))


def test_dataset_write_read_and_manifest(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "src", count=50)
    source = load_source(str(tmp_path / "src"))
    checksum = source_checksum(str(tmp_path / "src"))
    manifest = write_dataset(source, tmp_path / "ds", 0.2, 0, checksum)
    assert manifest["rows"] == {"train": 40, "heldout": 10}
    assert manifest["image_shape"] == [1, 8, 8] and manifest["source_checksum"] == checksum
    assert sum(manifest["class_counts"]["train"].values()) == 40
    train_images, train_labels = load_split(tmp_path / "ds", "train")
    heldout_images, _ = load_split(tmp_path / "ds", "heldout")
    assert train_images.shape == (40, 1, 8, 8) and len(train_labels) == 40
    # Every source image lands in exactly one split.
    both = {img.tobytes() for img in np.concatenate([train_images, heldout_images])}
    assert both == {img.tobytes() for img in source.images}


def test_a_split_is_read_whole_in_blocks_or_by_rows(tmp_path: Path) -> None:
    """The evaluation reads a large split without holding it: in record batches, or only the rows it asks for."""
    images = np.random.default_rng(0).integers(0, 256, (500, 1, 4, 4), dtype=np.uint8)
    write_dataset(Source(images, np.arange(500) % 10, "random"), tmp_path / "ds", 0.2, 0, "x",
                       WriteOptions(shard_mb=150 * 16 / 2**20))
    whole, labels = load_split(tmp_path / "ds", "train")
    blocks = list(iter_split(tmp_path / "ds", "train", batch_rows=64))
    assert max(len(b) for b, _ in blocks) == 64 and len({len(b) for b, _ in blocks}) > 1  # several shards, several batches
    np.testing.assert_array_equal(np.concatenate([b for b, _ in blocks]), whole)
    np.testing.assert_array_equal(np.concatenate([lb for _, lb in blocks]), labels)
    rows = np.array([399, 3, 3, 150, 0, 149])  # any order, repeats, across shard boundaries
    picked, picked_labels = load_split(tmp_path / "ds", "train", rows)
    np.testing.assert_array_equal(picked, whole[rows])
    np.testing.assert_array_equal(picked_labels, labels[rows])
    with pytest.raises(IndexError, match="rows 0..400 asked of 400"):
        load_split(tmp_path / "ds", "train", np.array([0, 400]))
    sample = sample_rows(400, 50, seed=3)
    assert len(set(sample.tolist())) == 50 and (np.diff(sample) > 0).all() and sample[-1] < 400
    assert (sample_rows(400, 0) == np.arange(400)).all() and (sample_rows(40, 50) == np.arange(40)).all()


def test_failed_write_leaves_nothing_that_looks_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_idx_dir(tmp_path / "src", count=50)
    source = load_source(str(tmp_path / "src"))

    def explode(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "rename", explode)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(source, tmp_path / "out" / "ds", 0.2, 0, "x")
    assert not (tmp_path / "out" / "ds").exists()
    assert list((tmp_path / "out").iterdir()) == []  # the temporary folder was removed too


def test_bundled_mnist_is_real_and_balanced() -> None:
    source = load_source("bundled-mnist")
    assert source.images.shape == (5000, 1, 28, 28) and source.images.dtype == np.uint8
    assert np.bincount(source.labels).tolist() == [500] * 10
    assert peek_source("bundled-mnist", 0.2) == ((1, 28, 28), 4000)


def test_dataset_rows_are_shuffled_so_shards_see_every_class(tmp_path: Path) -> None:
    """Sources sorted by class (like the bundled MNIST) must not give a worker's contiguous shard one class."""
    images = np.random.default_rng(0).integers(0, 256, (200, 1, 4, 4), dtype=np.uint8)
    source = Source(images, np.repeat(np.arange(10), 20), "sorted")
    write_dataset(source, tmp_path / "ds", 0.2, 0, "x")
    _, labels = load_split(tmp_path / "ds", "train")
    assert len(set(labels[: len(labels) // 2].tolist())) == 10


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_sources_checksum_the_files_they_load(name: str) -> None:
    assert all(path.is_file() for path in BUNDLED[name].files())
    assert len(source_checksum(name)) == 64
    assert load_source(name, Shaping(channels=BUNDLED[name].image_shape[0])).images.shape[1:] == BUNDLED[name].image_shape
