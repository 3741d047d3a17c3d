"""Image folder sources: class folders to labels, shaping (channels, resize and crop), checksums, bad inputs named."""

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan.data.errors import DataError
from gan.data.inputs import forget_source_inputs, source_checksum, source_inputs
from gan.data.reader import load_split
from gan.data.shaping import Shaping
from gan.data.sources import load_source, peek_source
from gan.data.writer import write_dataset

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}


def save_image(path: Path, size: tuple[int, int] = (12, 12), mode: str = "L", value: int = 0) -> np.ndarray:
    """A small image with a gradient (so resizing and cropping show), returned as saved: [H, W] or [H, W, 3]."""
    w, h = size
    pixels = (np.add.outer(np.arange(h), np.arange(w)) * 7 + value).astype(np.uint8)
    if mode == "RGB":
        pixels = np.stack([pixels, 255 - pixels, np.full_like(pixels, value)], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, FORMATS[path.suffix], **({"lossless": True} if path.suffix == ".webp" else {}))
    return pixels


def make_class_tree(root: Path, per_class: int = 3) -> None:
    """Classes 'cat' (PNG, greyscale), 'ant' (BMP and lossless WebP, RGB) and 'bee' (JPEG, greyscale)."""
    for k in range(per_class):  # values far enough apart that no two images are alike once shaped
        save_image(root / "cat" / f"{k}.png", value=9 * k)
        save_image(root / "ant" / f"{k}{'.bmp' if k % 2 else '.webp'}", mode="RGB", value=9 * k)
        save_image(root / "bee" / f"{k}.jpg", value=9 * k)


def test_class_folders_become_sorted_labels_and_the_mapping_reaches_the_manifest(tmp_path: Path) -> None:
    make_class_tree(tmp_path / "src")
    (tmp_path / "src" / ".DS_Store").write_bytes(b"\x00")  # hidden files are skipped
    source = load_source(str(tmp_path / "src"))
    assert source.class_names == ("ant", "bee", "cat") and source.labelled
    assert source.images.shape == (9, 1, 12, 12) and source.images.dtype == np.uint8
    np.testing.assert_array_equal(source.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(source.images[6, 0], save_image(tmp_path / "again.png", value=0))  # PNG is exact
    manifest = write_dataset(source, tmp_path / "ds", 0.34, 0, source_checksum(str(tmp_path / "src")))
    assert manifest["class_names"] == ["ant", "bee", "cat"] and manifest["labelled"] is True
    assert manifest["num_classes"] == 3 and manifest["image_shape"] == [1, 12, 12]


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    for k in range(4):
        save_image(tmp_path / "src" / f"{k}.png", mode="RGB", value=k)
    source = load_source(str(tmp_path / "src"), Shaping(channels=3))
    assert source.images.shape == (4, 3, 12, 12) and not source.labelled
    assert source.labels.tolist() == [0, 0, 0, 0]
    manifest = write_dataset(source, tmp_path / "ds", 0.25, 0, "x")
    assert manifest["labelled"] is False and manifest["num_classes"] == 1 and manifest["class_names"] == ["0"]
    assert load_split(tmp_path / "ds", "train")[0].shape == (3, 3, 12, 12)


def test_channels_convert_both_ways(tmp_path: Path) -> None:
    grey = save_image(tmp_path / "g" / "a.png")
    rgb = save_image(tmp_path / "c" / "a.png", mode="RGB")
    as_rgb = load_source(str(tmp_path / "g"), Shaping(channels=3)).images[0]
    assert as_rgb.shape == (3, 12, 12) and all((as_rgb[c] == grey).all() for c in range(3))
    as_grey = load_source(str(tmp_path / "c"), Shaping(channels=1)).images[0]
    np.testing.assert_array_equal(as_grey[0], np.asarray(Image.fromarray(rgb).convert("L")))


def test_short_side_is_resized_then_the_centre_cropped(tmp_path: Path) -> None:
    save_image(tmp_path / "src" / "wide.png", size=(16, 8))  # W x H
    save_image(tmp_path / "src" / "tall.png", size=(10, 20))
    nearest = load_source(str(tmp_path / "src"), Shaping(size=8, filter="nearest")).images
    assert nearest.shape == (2, 1, 8, 8)
    wide = np.asarray(Image.open(tmp_path / "src" / "wide.png"))
    np.testing.assert_array_equal(nearest[1, 0], wide[:, 4:12])  # already 8 high: the middle 8 columns
    lanczos = load_source(str(tmp_path / "src"), Shaping(size=8)).images
    assert lanczos.shape == (2, 1, 8, 8) and not np.array_equal(lanczos, nearest)


def test_array_sources_are_shaped_too(tmp_path: Path) -> None:
    source = load_source("bundled-digits", Shaping(channels=3))
    assert source.images.shape == (1797, 3, 8, 8)
    assert peek_source("bundled-mnist", 0.2, Shaping(channels=3, size=16)) == ((3, 16, 16), 4000)
    with pytest.raises(DataError, match=r"bundled-digits: 8x8 is smaller than data.image_size = 12 \(images are never enlarged\)"):
        load_source("bundled-digits", Shaping(size=12))


def test_checksum_covers_every_image_and_its_class_folder(tmp_path: Path) -> None:
    make_class_tree(tmp_path / "src")
    before = source_checksum(str(tmp_path / "src"))
    assert len(source_inputs(str(tmp_path / "src"))) == 9
    save_image(tmp_path / "src" / "cat" / "new.png")
    added = source_checksum(str(tmp_path / "src"))
    (tmp_path / "src" / "cat" / "new.png").rename(tmp_path / "src" / "bee" / "new.png")  # same bytes, other label
    moved = source_checksum(str(tmp_path / "src"))
    save_image(tmp_path / "src" / "bee" / "new.png", value=1)
    assert len({before, added, moved, source_checksum(str(tmp_path / "src"))}) == 4


def test_an_unchanged_source_is_hashed_once_and_a_changed_file_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingest stage's cache key and the ingest both ask for the source's hashes: the bytes are read once while the
    listing (names, sizes, times, inodes) is unchanged and settled; after a file changes they are read again, even
    with its modification time set back (its change time moved); a file changed just now is read every time."""
    from gan.data import inputs  # noqa: PLC0415

    src = str(tmp_path / "src")
    make_class_tree(tmp_path / "src")
    files = sorted(f for f in (tmp_path / "src").rglob("*") if f.is_file())
    read, hash_file = [], inputs._sha256_file
    monkeypatch.setattr(inputs, "_sha256_file", lambda location: read.append(location.path) or hash_file(location))
    monkeypatch.setattr(inputs, "SETTLED_NS", 0)  # settled as soon as written: the files are older than the hashing
    time.sleep(0.05)

    first = source_inputs(src)
    assert source_inputs(src) == first and len(read) == 9  # the second time from memory
    stamp = files[0].stat().st_mtime_ns
    save_image(files[0], value=7)  # other bytes...
    os.utime(files[0], ns=(stamp, stamp))  # ...and the modification time it had (as cp -p or rsync -a leave it)
    time.sleep(0.05)
    changed = source_inputs(src)
    assert changed != first and source_inputs(src) == changed and len(read) == 18
    forget_source_inputs()
    assert source_inputs(src) == changed and len(read) == 27

    forget_source_inputs()
    monkeypatch.setattr(inputs, "SETTLED_NS", 10**12)  # a file changed within the last 1000 s: not kept
    assert source_inputs(src) == changed and source_inputs(src) == changed and len(read) == 45


def test_sizes_must_agree_without_image_size(tmp_path: Path) -> None:
    save_image(tmp_path / "src" / "a.png")
    save_image(tmp_path / "src" / "b.png", size=(10, 12))
    with pytest.raises(DataError, match=r"b.png: 10x12 differs from 12x12 of .*a.png; set data.image_size to resize"):
        load_source(str(tmp_path / "src"))
    assert load_source(str(tmp_path / "src"), Shaping(size=10)).images.shape == (2, 1, 10, 10)


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-30]), r"bad.png: cannot decode \(.*(truncated|broken)"),
        (lambda p: p.write_bytes(b""), r"bad.png: empty file \(0 bytes\)"),
        (lambda p: p.write_bytes(b"not an image at all"), r"bad.png: cannot decode \(not a PNG, JPEG, WebP or BMP image\)"),
        (lambda p: Image.fromarray(np.zeros((12, 12), np.uint16)).save(p), r"bad.png: pixel mode 'I;16' is not supported"),
        (lambda p: p.rename(p.with_suffix(".txt")), r"bad.txt: not an image file \(expected .png, .jpg"),
        (lambda p: Image.fromarray(np.zeros((4, 12), np.uint8)).save(p), r"bad.png: 12x4 is smaller than data.image_size = 8"),
    ],
)
def test_bad_input_is_named_with_its_reason(tmp_path: Path, spoil, expected: str) -> None:  # noqa: ANN001
    make_class_tree(tmp_path / "src")
    save_image(tmp_path / "src" / "cat" / "bad.png", size=(64, 64))
    spoil(tmp_path / "src" / "cat" / "bad.png")
    with pytest.raises(DataError, match=expected):
        load_source(str(tmp_path / "src"), Shaping(size=8))


def test_layout_problems_are_collected_into_one_message(tmp_path: Path) -> None:
    make_class_tree(tmp_path / "src")
    (tmp_path / "src" / "empty").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("hello")
    for k in range(6):
        (tmp_path / "src" / "cat" / f"zero{k}.png").write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_source(str(tmp_path / "src"))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'src'}: 8 bad inputs: ") and message.endswith("; and 3 more")
    assert "notes.txt: a file beside class folders" in message and "empty: class folder holds no images" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("layout", "shape"),
    [(lambda x: x[:, 0], (5, 1, 8, 8)), (lambda x: x.transpose(0, 2, 3, 1), (5, 3, 8, 8)), (lambda x: x, (5, 3, 8, 8))],
    ids=["NHW", "NHWC", "NCHW"],
)
def test_npz_layouts_and_labels(tmp_path: Path, layout, shape: tuple[int, ...]) -> None:  # noqa: ANN001
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)  # [N, C, H, W]
    np.savez(tmp_path / "d.npz", images=layout(images), labels=np.array([0, 1, 1, 2, 0], np.uint8))
    source = load_source(str(tmp_path / "d.npz"), Shaping(channels=shape[1]))
    assert source.images.shape == shape and source.labelled
    np.testing.assert_array_equal(source.images[:, 0], images[:, 0])
    assert source.labels.tolist() == [0, 1, 1, 2, 0] and source.labels.dtype == np.int64
    assert [name for name, _ in source_inputs(str(tmp_path / "d.npz"))] == ["d.npz"]
    np.savez(tmp_path / "d.npz", images=layout(images))
    unlabelled = load_source(str(tmp_path / "d.npz"), Shaping(channels=1, size=4))
    assert unlabelled.images.shape == (5, 1, 4, 4) and not unlabelled.labelled and unlabelled.labels.tolist() == [0] * 5


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"pixels": np.zeros((2, 8, 8), np.uint8)}, r"d.npz: no 'images' array \(it holds 'pixels'\)"),
        ({"images": np.zeros((2, 8, 8), np.float32)}, r"d.npz: 'images' has dtype float32; expected uint8"),
        ({"images": np.zeros((2, 8, 8, 4), np.uint8)}, r"d.npz: 'images' has shape \(2, 8, 8, 4\); expected \[N, H, W\]"),
        ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.zeros(3, np.int64)}, r"d.npz: 'labels' has dtype int64 and shape \(3,\); expected 2"),
        ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0.0, 1.0])}, r"'labels' has dtype float64"),
        ({"images": np.array([None, None])}, r"d.npz: 'images' has dtype object; expected uint8"),  # never unpickled
    ],
)
def test_npz_problems_name_the_file_and_key(tmp_path: Path, arrays: dict, expected: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=expected):
        load_source(str(tmp_path / "d.npz"))


def test_broken_npz_and_other_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "d.npz").write_bytes((tmp_path / "d.npz").read_bytes()[:100])
    with pytest.raises(DataError, match=r"d.npz: cannot read"):
        load_source(str(tmp_path / "d.npz"))
    (tmp_path / "d.csv").write_text("1,2")
    with pytest.raises(DataError, match=r"is a file but not an .npz"):
        load_source(str(tmp_path / "d.csv"))


@pytest.mark.parametrize(("window", "gap"), [(4 << 20, 32 << 10), (5 * 48, 48), (48, 1)])
def test_rows_of_a_stored_array_are_read_in_any_order_whatever_the_read_sizes(tmp_path: Path, window: int, gap: int) -> None:
    """Shuffled rows (repeats too) of an .npy read by coalesced `pread`s: one window, several, one row per read."""
    from gan.data.arrays import Mapped  # noqa: PLC0415

    images = np.random.default_rng(0).integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    stored = Mapped(str(tmp_path / "a.npy"), 128, images.shape, "nhwc")  # numpy's header of a small array: 128 bytes
    rows = np.concatenate([np.random.default_rng(1).permutation(200)[:140], [7, 7, 0, 199]])
    np.testing.assert_array_equal(stored.take(rows, window, gap), images[rows].transpose(0, 3, 1, 2))
    assert stored.take(np.array([], np.int64)).shape == (0, 3, 4, 4)
