"""The ingest stage's own logic (without Prefect): IDX source to dataset folder, idempotent, preflight checks."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gan.config import ConfigError
from gan.data.errors import DataError
from gan.data.manifest import read_manifest
from gan.data.reader import load_split
from gan.data.rows import Source
from gan.data.writer import WriteOptions, write_dataset
from pipelines.config import load_config
from pipelines.stages.ingest import ingest, preflight
from tests.test_data import make_idx_dir


def config(tmp_path: Path, source: Path | str, *extra: str):  # noqa: ANN201
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
        ingest(config(tmp_path, tmp_path / "img", "model.arch=mlp", "train.batch_size=4", "data.image_size=8"))


def png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def distinct_images(count: int, size: int = 8, seed: int = 0) -> np.ndarray:
    """[count, size, size] uint8, no two alike."""
    images = np.random.default_rng(seed).integers(0, 256, (count, size, size), dtype=np.uint8)
    images[:, 0, :4] = np.arange(count)[:, None].view(np.uint8).reshape(count, -1)[:, :4]  # row number in the first pixels
    return images


def test_parquet_source_at_a_file_uri_with_named_columns(tmp_path: Path) -> None:
    """Encoded PNG bytes in a struct column (as Hugging Face datasets write them) and class-name labels, read through
    pyarrow.fs from a file:// URI, in two Parquet files of a folder."""
    images = distinct_images(40)
    names = np.array(["zebra", "ant"])[np.arange(40) % 2]
    (tmp_path / "pq").mkdir()
    for part, rows in enumerate((slice(0, 25), slice(25, 40))):
        column = pa.array([{"bytes": png_bytes(i), "path": None} for i in images[rows]])
        pq.write_table(pa.table({"picture": column, "kind": names[rows]}), tmp_path / "pq" / f"part-{part}.parquet")
    uri = f"file://{tmp_path / 'pq'}"
    cfg = config(tmp_path, uri, "data.image_column=picture", "data.label_column=kind", "model.arch=mlp", "train.batch_size=4")
    preflight(cfg)
    dataset = Path(ingest(cfg))
    manifest = read_manifest(dataset)
    assert manifest["class_names"] == ["ant", "zebra"] and manifest["rows"] == {"train": 32, "heldout": 8}
    train, labels = load_split(dataset, "train")
    index = pq.read_table(dataset / "train").column("index").to_numpy()
    np.testing.assert_array_equal(train[:, 0], images[index])
    assert [("ant", "zebra")[k] for k in labels] == names[index].tolist()
    with pytest.raises(DataError, match=r"part-0.parquet: no column 'image' \(data.image_column\); it has 'picture', 'kind'"):
        preflight(config(tmp_path, uri))


def test_an_npz_streams_into_row_group_sized_shards(tmp_path: Path) -> None:
    images = distinct_images(300)
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(300) % 3)
    cfg = config(tmp_path, tmp_path / "d.npz", "data.shard_mb=0.005")  # 5242 bytes: 81 images of 64 bytes per shard
    dataset = Path(ingest(cfg))
    manifest = read_manifest(dataset)
    assert manifest["rows"] == {"train": 240, "heldout": 60}
    assert [len(files) for files in manifest["shards"].values()] == [3, 1]
    shards = [pq.ParquetFile(dataset / f) for f in manifest["shards"]["train"]]
    assert [s.metadata.num_rows for s in shards] == [81, 81, 78] and all(s.metadata.num_row_groups == 1 for s in shards)
    images, labels = load_split(dataset, "train")
    index = pq.read_table(dataset / "train").column("index").to_numpy()
    np.testing.assert_array_equal(images[:, 0], distinct_images(300)[index])
    np.testing.assert_array_equal(labels, index % 3)


def test_shards_are_written_a_row_group_at_a_time_and_the_fingerprint_is_the_contents(tmp_path: Path) -> None:
    """What the writer buffers and a reader holds is one row group; how the rows fall into row groups changes the
    files, not the dataset's fingerprint (which covers each shard's images, labels and indices)."""
    source = Source(distinct_images(300)[:, None], np.arange(300) % 3, "distinct")
    layouts = {"one group per shard": WriteOptions(shard_mb=0.005),
               "groups of 20 rows": WriteOptions(shard_mb=0.005, row_group_mb=20 * 64 / 2**20),
               "one shard": WriteOptions(row_group_mb=0.001)}
    written = {name: write_dataset(source, tmp_path / name, 0.2, 0, "x", options) for name, options in layouts.items()}
    groups = {name: [pq.ParquetFile(tmp_path / name / f).metadata.num_row_groups for f in m["shards"]["train"]]
              for name, m in written.items()}
    assert groups == {"one group per shard": [1, 1, 1], "groups of 20 rows": [5, 5, 4], "one shard": [15]}
    assert written["one group per shard"]["fingerprint"] == written["groups of 20 rows"]["fingerprint"]
    for name in layouts:
        np.testing.assert_array_equal(load_split(tmp_path / name, "train")[0], load_split(tmp_path / "one shard", "train")[0])


def broken_tree(root: Path) -> dict[str, str]:
    """A class tree with one good image per class and one of each kind of bad input; returns file -> expected reason."""
    from tests.test_sources import save_image  # noqa: PLC0415

    for k, cls in enumerate(("a", "b", "c")):
        for j in range(4):
            save_image(root / cls / f"{j}.png", value=40 * k + 9 * j)
    save_image(root / "a" / "copy.png", value=0)
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "cut.png").write_bytes((root / "a" / "1.png").read_bytes()[:45])  # inside the pixel data
    save_image(root / "c" / "tiny.png", size=(4, 4))
    Image.fromarray(np.arange(100, dtype=np.uint16).reshape(10, 10) * 600).save(root / "c" / "deep.png")  # 16-bit
    return {"a/copy.png": "the same image as", "b/empty.png": "empty file", "b/cut.png": "cannot decode",
            "c/tiny.png": "smaller than data.image_size", "c/deep.png": "pixel mode 'I"}


def test_bad_inputs_stop_ingest_with_a_quarantine_report(tmp_path: Path) -> None:
    expected = broken_tree(tmp_path / "img")
    cfg = config(tmp_path, tmp_path / "img", "data.image_size=8")
    with pytest.raises(DataError, match=r"img: 5 bad inputs: .*; every one is listed in .*quarantine/.*\.json") as err:
        ingest(cfg)
    report = json.loads(Path(str(err.value).rsplit(" ", 1)[1]).read_text())
    found = {Path(i["input"]).relative_to(tmp_path / "img").as_posix(): i["reason"] for i in report["inputs"]}
    assert found.keys() == expected.keys() and all(expected[k] in found[k] for k in expected), found
    datasets = Path(cfg.runtime.workdir) / "datasets"
    assert not datasets.exists() or not list(datasets.iterdir())  # nothing written, not even a temporary


def test_skipped_bad_inputs_are_listed_beside_the_dataset_and_counted(tmp_path: Path) -> None:
    expected = broken_tree(tmp_path / "img")
    dataset = Path(ingest(config(tmp_path, tmp_path / "img", "data.image_size=8", "data.on_bad_input=skip")))
    manifest = read_manifest(dataset)
    assert manifest["quarantined"] == 5 and sum(manifest["rows"].values()) == 12
    report = json.loads((dataset / "quarantine.json").read_text())
    assert sorted(Path(i["input"]).name for i in report["inputs"]) == sorted(Path(k).name for k in expected)


def test_labels_outside_the_declared_classes_are_bad_inputs(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images=distinct_images(30), labels=np.arange(30) % 4)
    with pytest.raises(DataError, match=r"d.npz: 7 bad inputs: .*d.npz row 3: label 3 is outside data.classes \(0..2\)"):
        ingest(config(tmp_path, tmp_path / "d.npz", "data.classes=[zero,one,two]"))
    skipped = read_manifest(ingest(config(tmp_path, tmp_path / "d.npz", "data.classes=[zero,one,two]", "data.on_bad_input=skip")))
    assert skipped["class_names"] == ["zero", "one", "two"] and skipped["num_classes"] == 3 and skipped["quarantined"] == 7


def test_added_files_make_a_new_version_that_names_its_parent(tmp_path: Path) -> None:
    from tests.test_sources import make_class_tree, save_image  # noqa: PLC0415

    make_class_tree(tmp_path / "img", per_class=4)
    cfg = config(tmp_path, tmp_path / "img")
    first = Path(ingest(cfg))
    assert read_manifest(first)["parent"] is None
    save_image(tmp_path / "img" / "cat" / "new-1.png", value=101)
    save_image(tmp_path / "img" / "bee" / "new-2.jpg", value=103)
    second = Path(ingest(cfg))
    manifest = read_manifest(second)
    assert second != first and manifest["parent"]["folder"] == first.name
    assert manifest["changes"] == {"added": 2, "changed": 0, "removed": 0}
    assert json.loads((second / "changes.json").read_text())["added"] == ["bee/new-2.jpg", "cat/new-1.png"]
    assert sum(manifest["rows"].values()) == sum(read_manifest(first)["rows"].values()) + 2
    assert Path(ingest(cfg)) == second  # unchanged since: found, not written again


def test_image_files_decode_in_a_process_pool_to_the_same_dataset(tmp_path: Path) -> None:
    root = tmp_path / "img"
    root.mkdir()
    for k, pixels in enumerate(distinct_images(300)):
        Image.fromarray(pixels).save(root / f"{k:04d}.png")
    one = read_manifest(ingest(config(tmp_path / "one", root, "data.ingest_workers=1")))
    two = read_manifest(ingest(config(tmp_path / "two", root, "data.ingest_workers=2")))
    assert one["fingerprint"] == two["fingerprint"] and one["rows"] == {"train": 240, "heldout": 60}
