"""The source formats are one table, `gan.data.sources.FORMATS`: which row opens a source, and every message that says
what a source may be, come from it; a row added to it is opened and named with no other change."""

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gan.data import sources
from gan.data.arrays import in_memory
from gan.data.errors import DataError
from gan.data.formats.idx import write_idx
from gan.data.rows import Rows, Source
from gan.data.shaping import GREY_AS_STORED
from gan.data.sources import FORMATS, Format, Opening, find, format_of, load_source


def one_of_each(root: Path) -> dict[str, str]:
    """A tiny source of every format, by the name of its row."""
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    (root / "idx").mkdir(parents=True)
    write_idx(root / "idx" / "train-images-idx3-ubyte", images)
    write_idx(root / "idx" / "train-labels-idx1-ubyte", np.array([0, 1, 0, 1], np.uint8))
    (root / "images").mkdir()
    for k, image in enumerate(images):
        Image.fromarray(image).save(root / "images" / f"{k}.png")
    np.savez(root / "a.npz", images=images)
    pq.write_table(pa.table({"image": [(root / "images" / f"{k}.png").read_bytes() for k in range(4)]}), root / "a.parquet")
    return {"bundled": "bundled-digits", "idx": str(root / "idx"), "images": str(root / "images"), "npz": str(root / "a.npz"),
            "parquet": str(root / "a.parquet")}


def test_every_row_opens_its_own_sources(tmp_path: Path) -> None:
    made = one_of_each(tmp_path)
    assert sorted(made) == sorted(f.name for f in FORMATS)
    for name, source in made.items():
        if name != "bundled":
            assert format_of(find(source)).name == name, source
        assert load_source(source).images.shape[1] == 1, source
    (tmp_path / "pq").mkdir()
    (tmp_path / "a.parquet").rename(tmp_path / "pq" / "a.parquet")
    assert format_of(find(str(tmp_path / "pq"))).name == "parquet"  # a folder of Parquet files and nothing else


def test_what_a_source_may_be_is_named_from_the_table(tmp_path: Path) -> None:
    """Each message names every row that could have read the source, in the table's order."""
    with pytest.raises(DataError) as missing:
        find(str(tmp_path / "nowhere"))
    names = [n for f in FORMATS for n in f.names]
    folders, suffixes = [f.folder for f in FORMATS if f.folder], [f.suffix for f in FORMATS if f.suffix]
    assert names and all(repr(n) in str(missing.value) for n in names)
    assert re.search(".*".join(map(re.escape, folders + suffixes)), str(missing.value)), missing.value
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=".*".join(map(re.escape, suffixes))):
        format_of(find(str(tmp_path / "notes.txt")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as empty:
        format_of(find(str(tmp_path / "empty")))
    assert all((f.holds or f.folder) in str(empty.value) for f in FORMATS if f.folder), empty.value
    assert str(missing.value) == (
        f"data.source: {str(tmp_path / 'nowhere')!r} is neither a bundled data set ('bundled-mnist', 'bundled-digits', "
        "'bundled-photos') nor an existing folder of IDX files, images or Parquet files, nor an .npz or .parquet file"
    )
    assert str(empty.value) == (f"{tmp_path / 'empty'}: no images (.png, .jpg, .jpeg, .webp, .bmp), class folders of them, "
                                "'*-images-idx3-ubyte[.gz]' IDX files or Parquet files found")


def test_a_new_row_is_opened_and_named_with_no_other_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two files a new format takes: its module (here an opener) and its row."""
    def open_csv(at: Opening) -> Rows:
        pixels = np.loadtxt(at.location.path, delimiter=",", dtype=np.uint8).reshape(-1, 1, 2, 2)  # [N, 1, 2, 2]
        return in_memory(Source(pixels, np.zeros(len(pixels), np.int64), "csv", labelled=False), at.shaping)

    csv = Format("csv", "a .csv file of 2x2 images, one a line", open_csv, suffix=".csv")
    monkeypatch.setattr(sources, "FORMATS", (*FORMATS, csv))
    (tmp_path / "a.csv").write_text("1,2,3,4\n5,6,7,8\n")
    loaded = load_source(str(tmp_path / "a.csv"), GREY_AS_STORED)
    assert loaded.images.tolist() == [[[[1, 2], [3, 4]]], [[[5, 6], [7, 8]]]]
    with pytest.raises(DataError, match=r"nor an \.npz, \.parquet or \.csv file"):
        find(str(tmp_path / "nowhere"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"is a file but not an \.npz, \.parquet or \.csv; expected one of those"):
        load_source(str(tmp_path / "notes.txt"))
