"""The ingest stage's own logic (without Prefect): IDX source to dataset folder, idempotent, preflight checks."""

from pathlib import Path

import pytest

from gan.config import ConfigError
from gan.data import DataError, read_manifest
from pipelines.config import load_config
from pipelines.ingest import ingest, preflight
from tests.test_data import make_idx_dir


def config(tmp_path: Path, source: Path, *extra: str):  # noqa: ANN201
    return load_config(None, [f"data.source={source}", f"runtime.workdir={tmp_path / 'work'}", *extra])


def test_idx_source_becomes_a_dataset_once(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "idx", count=60, size=8)
    cfg = config(tmp_path, tmp_path / "idx", "model.arch=mlp", "train.batch_size=4")
    preflight(cfg)
    first = Path(ingest(cfg))
    manifest = read_manifest(first)
    assert manifest["rows"] == {"train": 50, "heldout": 10} and manifest["image_shape"] == [1, 8, 8]
    written = (first / "manifest.json").stat().st_mtime_ns
    assert Path(ingest(cfg)) == first and (first / "manifest.json").stat().st_mtime_ns == written  # found, not rewritten


def test_same_bytes_same_folder_changed_bytes_new_folder(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "a", count=30)
    make_idx_dir(tmp_path / "b", count=30)
    assert ingest(config(tmp_path, tmp_path / "a")) == ingest(config(tmp_path, tmp_path / "b"))
    make_idx_dir(tmp_path / "b", count=31)
    assert ingest(config(tmp_path, tmp_path / "a")) != ingest(config(tmp_path, tmp_path / "b"))


def test_preflight_rejects_a_model_or_batch_that_cannot_fit(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "idx", count=40, size=10)
    with pytest.raises(ConfigError, match="model.arch 'dcgan' halves the image at least twice, so height and width must be divisible by 4"):
        preflight(config(tmp_path, tmp_path / "idx", "model.arch=dcgan"))
    with pytest.raises(DataError, match="each of 2 workers holds only 16 training images"):
        preflight(config(tmp_path, tmp_path / "idx", "model.arch=mlp", "train.batch_size=32"))
    assert not (tmp_path / "work").exists()  # nothing written


def test_image_folder_is_shaped_and_a_new_shape_is_a_new_dataset(tmp_path: Path) -> None:
    from tests.test_sources import make_class_tree, save_image  # noqa: PLC0415

    make_class_tree(tmp_path / "img", per_class=8)
    cfg = config(tmp_path, tmp_path / "img", "model.arch=mlp", "train.batch_size=4", "data.channels=3", "data.image_size=8")
    preflight(cfg)
    manifest = read_manifest(ingest(cfg))
    assert manifest["image_shape"] == [3, 8, 8] and manifest["class_names"] == ["ant", "bee", "cat"]
    assert ingest(config(tmp_path, tmp_path / "img", "data.image_size=12")) != ingest(cfg)
    save_image(tmp_path / "img" / "bee" / "small.png", size=(6, 6))
    with pytest.raises(DataError, match="small.png: 6x6 is smaller than data.image_size = 8"):
        preflight(config(tmp_path, tmp_path / "img", "model.arch=mlp", "train.batch_size=4", "data.image_size=8"))
