"""What users hand in, fuzzed: random, truncated and mutated bytes as IDX, .npz, image-folder and Parquet sources, and
any text as a `--set`. Each gives a valid result or the user's error (a DataError naming a file of the source, a
ConfigError naming the key or the `--set`) in one line; never another exception. Each failure the fuzzing found is
pinned below as an example of its own.
"""

import gzip
import io
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from gan.config import ConfigError
from gan.data.errors import DataError
from gan.data.formats.idx import write_idx
from gan.data.sources import load_source
from pipelines.config import PipelineConfig, keys, load_config

BOUNDED = settings(max_examples=40, deadline=None, database=None)  # the whole module runs in well under a minute


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (6, 8, 8), dtype=np.uint8)
LABELS = (np.arange(6) % 2).astype(np.uint8)
PNG = [encoded(np.full((8, 8), 40 * k, np.uint8), "PNG") for k in range(3)]
ENCODED = [encoded(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8), fmt) for fmt in ("PNG", "JPEG", "BMP", "WEBP")]


def idx_bytes(array: np.ndarray) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        write_idx(Path(tmp) / "f", array)
        return (Path(tmp) / "f").read_bytes()


def npz_bytes(save: Callable = np.savez, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    save(buffer, **arrays)
    return buffer.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


IDX = (idx_bytes(IMAGES), idx_bytes(LABELS))
NPZ = [npz_bytes(np.savez, images=IMAGES, labels=LABELS), npz_bytes(np.savez_compressed, images=IMAGES, labels=LABELS)]
PARQUET = parquet_bytes(pa.table({"image": PNG * 2, "label": LABELS.tolist()}))


def damaged(good: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, `good` cut anywhere, or `good` with a few bytes changed."""
    edits = st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1, max_size=8)
    return st.one_of(st.binary(max_size=400), st.integers(0, len(good)).map(lambda n: good[:n]), edits.map(lambda e: edited(good, e)))


def edited(good: bytes, edits: list[tuple[int, int]]) -> bytes:
    changed = bytearray(good)
    for at, value in edits:
        changed[at] = value
    return bytes(changed)


def read_or_refuse(source: Path) -> None:
    """load_source gives images with a label each, or a one-line DataError naming a file of the source."""
    try:
        read = load_source(str(source))
    except DataError as err:
        message = str(err)
        assert str(source) in message and "\n" not in message, message
    else:
        assert read.images.ndim == 4 and len(read.images) == len(read.labels) and read.images.dtype == np.uint8


def written(files: dict[str, bytes], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


# --- the source readers ---------------------------------------------------------------------------------------------

def idx_files() -> st.SearchStrategy[dict[str, bytes]]:
    """An IDX pair, plain or gzip-compressed; damaged before compressing, or the compressed bytes damaged."""
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    pair = st.tuples(damaged(IDX[0]), damaged(IDX[1]))
    return st.one_of(
        pair.map(lambda p: dict(zip(names, p))),
        pair.map(lambda p: {f"{name}.gz": gzip.compress(b) for name, b in zip(names, p)}),
        st.tuples(*(damaged(gzip.compress(b)) for b in IDX)).map(lambda p: {f"{name}.gz": b for name, b in zip(names, p)}),
    )


@BOUNDED
@given(idx_files())
def test_idx_bytes_are_read_or_refused(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        read_or_refuse(written(files, Path(tmp) / "src"))


@BOUNDED
@given(st.sampled_from(NPZ).flatmap(damaged))
def test_npz_bytes_are_read_or_refused(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        read_or_refuse(written({"d.npz": content}, Path(tmp)) / "d.npz")


@BOUNDED
@given(st.sampled_from(ENCODED).flatmap(damaged), st.sampled_from([".png", ".jpg", ".bmp", ".webp"]))
def test_image_bytes_are_read_or_refused(content: bytes, suffix: str) -> None:
    """One damaged image among good ones in a flat folder."""
    with tempfile.TemporaryDirectory() as tmp:
        read_or_refuse(written({"a.png": PNG[0], "b.png": PNG[1], "c.png": PNG[2], f"d{suffix}": content}, Path(tmp) / "src"))


@BOUNDED
@given(damaged(PARQUET))
def test_parquet_bytes_are_read_or_refused(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        read_or_refuse(written({"d.parquet": content}, Path(tmp)) / "d.parquet")


# What the fuzzing found, each pinned: (id, files of the source folder, the source within it ("" for the folder), what
# the message says). The .npz rows are built member by member, so that their CRCs hold and the damage itself is read.
def npy(array: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    """`array` as an .npy member whose header declares `shape` (default: its own)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": array.dtype.str, "fortran_order": False, "shape": shape or array.shape})
    return header.getvalue() + array.tobytes()


def stored_npz(images: bytes, labels: bytes) -> bytes:
    """An uncompressed .npz (as numpy.savez writes one) of these members, verbatim."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("images.npy", images)
        archive.writestr("labels.npy", labels)
    return out.getvalue()


LABELS64 = LABELS.astype(np.int64)
FOUND = [
    ("gzip IDX with bad deflate data", {"train-images-idx3-ubyte.gz": edited(gzip.compress(IDX[0]), [(12, 0xFF), (13, 0xFF)]),
                                        "train-labels-idx1-ubyte.gz": gzip.compress(IDX[1])}, "", "train-images-idx3-ubyte.gz: cannot read ("),
    ("compressed npz with bad deflate data", {"d.npz": edited(NPZ[1], [(60, 0xFF), (61, 0xFF), (62, 0xFF)])}, "d.npz",
     "d.npz: cannot read ("),
    ("npz header the tokenizer cannot end", {"d.npz": stored_npz(npy(IMAGES).replace(b"(6, 8, 8), }", b"((6, 8, 8, }"), npy(LABELS64))},
     "d.npz", "d.npz: cannot read ("),
    ("npz images declaring more bytes than they hold", {"d.npz": stored_npz(npy(IMAGES, (6, 8, 9)), npy(LABELS64))}, "d.npz",
     "d.npz: 'images.npy' declares shape (6, 8, 9) of uint8 ("),
    ("npz labels declaring 2**40 of them", {"d.npz": stored_npz(npy(IMAGES), npy(LABELS64, (2**40,)))}, "d.npz",
     "d.npz: 'labels.npy' declares shape (1099511627776,) of int64 ("),
    # (the Parquet edits are at places found in pyarrow 25.0.1's bytes, the version pinned in pyproject.toml)
    ("Parquet page damaged", {"d.parquet": edited(PARQUET, [(10, 0)])}, "d.parquet", "d.parquet: cannot read column 'image' as Parquet (Corrupt snappy compressed data.)"),
    ("Parquet footer declaring rows a column lacks", {"d.parquet": edited(PARQUET, [(369, 0)])}, "d.parquet",
     "d.parquet: column 'label' holds fewer rows than the file's footer declares (6); the file is damaged"),
    ("Parquet column name not UTF-8", {"d.parquet": edited(PARQUET, [(458, 255)])}, "d.parquet",
     "d.parquet: cannot read as Parquet ('utf-8' codec can't decode byte 0xff"),
    ("Parquet folder: a file without the image column", {"a.parquet": PARQUET, "b.parquet": parquet_bytes(pa.table({"img": PNG}))}, "",
     "b.parquet: no column 'image' (data.image_column); it has 'img'"),
    ("Parquet folder: a file without the labels the first has", {"a.parquet": PARQUET, "b.parquet": parquet_bytes(pa.table({"image": PNG}))},
     "", "b.parquet: no column 'label' (data.label_column), unlike the folder's first file; expected every file labelled or none"),
]


@pytest.mark.parametrize(("files", "source", "said"), [row[1:] for row in FOUND], ids=[row[0] for row in FOUND])
def test_what_the_fuzzing_found_is_a_data_error_naming_the_file(tmp_path: Path, files: dict, source: str, said: str) -> None:
    folder = written(files, tmp_path / "src")
    with pytest.raises(DataError) as err:
        load_source(str(folder / source))
    assert said in str(err.value) and str(folder) in str(err.value) and "\n" not in str(err.value), str(err.value)


# --- the config loader ----------------------------------------------------------------------------------------------

KEYS = [key for key, _, _ in keys()]
ODD_VALUES = ["&a [*a]", "&a {x: *a}", "1e999", ".nan", "-.inf", "[]", "{}", "~", "null", "99999999999999999999999", "!!binary aGk=",
              "!!python/object:os.system", "2001-12-14", "[[[[[[1]]]]]]", "'", '"', "[1, 2", "{a: 1", "a: b: c", "- x", "\t", "@champion",
              "models:/x@", "s3://", "file://", "~nobody/x", "0x10", "1_000"]


def load_or_refuse(items: list[str]) -> None:
    """A config, or a one-line ConfigError that quotes a `--set` item or names its key (an item of it: model.g_hidden.0; its
    section, when that is unknown)."""
    try:
        cfg = load_config(None, items)
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message, message
        keys_given = [item.partition("=")[0].strip() for item in items]
        named = {repr(item) for item in items} | {f"{key}{end}" for key in keys_given for end in (" = ", ".")}
        named |= {f"{key.split('.')[0]} = " for key in keys_given}
        assert any(name in message for name in named), message
    else:
        assert isinstance(cfg, PipelineConfig)


@settings(max_examples=200, deadline=None, database=None)
@given(st.sampled_from(KEYS), st.one_of(st.text(max_size=24), st.sampled_from(ODD_VALUES)))
def test_any_value_for_a_key_is_a_config_or_a_config_error_naming_it(key: str, value: str) -> None:
    load_or_refuse([f"{key}={value}"])


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=3))
def test_any_set_text_is_a_config_or_a_config_error(items: list[str]) -> None:
    load_or_refuse(items)


@pytest.mark.parametrize(("item", "said"), [
    # a value inside a list or mapping given by --set was said to come from the defaults
    ("model.g_hidden=[1e400]", "config error: model.g_hidden.0 = '1e400' (--set): Input should be a valid integer"),
    ("registry.tags=&a {x: *a}", "config error: registry.tags.x = {'x': {...}} (--set): Input should be a valid string"),
    # a key with a line break in it was printed as it was, on two lines
    ("0\n.0=", "--set '0\\n.0=': expected section.key=value, e.g. train.epochs=5"),
    ("train\n.epochs=3", "--set 'train\\n.epochs=3': expected section.key=value, e.g. train.epochs=5"),
])
def test_what_the_fuzzing_found_in_set_is_one_line_naming_where_it_came_from(item: str, said: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [item])
    assert str(err.value).startswith(said), str(err.value)
