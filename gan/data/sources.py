"""Where images come from: `FORMATS`, one row per source format, which says how a source is recognised and opened; the
dispatch and every message about what a source may be read it, so a new format is a module in `gan/data/formats/` and
its row here.

A source is opened as `Rows`: its labels up front and a reader that returns any rows' images on demand, already shaped
(channels, size). Ingest walks the rows in chunks, so a source of any size passes through bounded memory.
"""

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from gan.data.errors import DataError, raise_problems
from gan.data.formats import bundled, idx, images, npz, parquet
from gan.data.location import Location, locate
from gan.data.rows import Rows, Source, declare_classes, drop_small_classes, read_all, read_rows
from gan.data.shaping import GREY_AS_STORED, Shaping, shaped_size


@dataclass(frozen=True)
class Opening:
    """What a format's opener is given: the source as configured and where it is (None for a source known by name), the
    shaping, a scratch folder (local copies of remote files, unpacked arrays), Parquet's image and label columns, the
    decoding processes, and `peek`: only the first rows will be read."""

    source: str
    location: Location | None
    shaping: Shaping
    scratch: Path
    columns: tuple[str, str]
    workers: int
    peek: bool


@dataclass(frozen=True)
class Format:
    """A row of FORMATS. A source is of this format by its name (`names`), as a file by its ending (`suffix`), or as a
    folder by its entries (`claims`; the folder row without one takes any folder that no other row claims). `folder`
    and `holds` are what messages call a folder of it, in short and in full (default: `folder`)."""

    name: str
    help: str
    open: Callable[[Opening], Rows]
    names: tuple[str, ...] = ()
    suffix: str = ""
    folder: str = ""
    holds: str = ""
    claims: Callable[[list[pafs.FileInfo]], bool] | None = None


FORMATS = (
    Format("bundled", f"a data set shipped in an installed package, by name: {', '.join(bundled.BUNDLED)}",
           lambda at: bundled.open_bundled(at.source, at.shaping), names=tuple(bundled.BUNDLED)),
    Format("idx", "a folder of MNIST-format IDX files, every '*-images-idx3-ubyte[.gz]' with its '*-labels-idx1-ubyte[.gz]'",
           lambda at: idx.open_idx_dir(at.location, at.shaping, at.scratch),
           folder="IDX files", holds="'*-images-idx3-ubyte[.gz]' IDX files", claims=idx.holds_idx),
    Format("images", "a folder of PNG, JPEG, WebP or BMP images: class subfolders give the labels, a flat folder is unlabelled",
           lambda at: images.open_image_tree(at.location, at.shaping),
           folder="images", holds=f"images ({', '.join(images.IMAGE_SUFFIXES)}), class folders of them"),
    Format("npz", "an .npz file with 'images' (uint8) and optional 'labels'",
           lambda at: npz.open_npz(at.location.local_path(at.scratch), at.shaping, at.scratch), suffix=".npz"),
    Format("parquet", "a Parquet file or a folder of them (data.image_column, data.label_column)",
           lambda at: parquet.open_parquet(parquet.parquet_files(at.location), at.shaping, at.scratch, at.columns, at.workers, at.peek),
           suffix=".parquet", folder="Parquet files", claims=parquet.holds_parquet),
)


def open_source(source: str, shaping: Shaping, scratch: Path, columns: tuple[str, str] = ("image", "label"), workers: int = 1,
                peek: bool = False) -> Rows:
    """Open `data.source` for reading as `shaping` says, with the row of FORMATS it is of. `scratch` holds local copies of
    remote single files and unpacked arrays of compressed ones; `columns` names a Parquet source's image and label
    columns. `peek`: only the first rows need to read (a Parquet source decodes no more)."""
    named = next((f for f in FORMATS if source in f.names), None)
    if named is not None:
        return named.open(Opening(source, None, shaping, scratch, columns, workers, peek))
    location = find(source)
    rows = format_of(location).open(Opening(source, location, shaping, scratch, columns, workers, peek))
    return dataclasses.replace(rows, origin=location.path)


def find(source: str) -> Location:
    """The Location of `data.source`, or a DataError naming what a source may be."""
    location = locate(source)
    if location.kind() == pafs.FileType.NotFound:
        names = ", ".join(repr(name) for f in FORMATS for name in f.names)
        raise DataError(f"data.source: {source!r} is neither a bundled data set ({names}) nor an existing folder of "
                        f"{_either([f.folder for f in FORMATS if f.folder])}, nor an {_either(_suffixes())} file")
    return location


def format_of(location: Location) -> Format:
    """The row of FORMATS a file (by its ending) or a folder (by its entries) is of, or a DataError naming what it could be."""
    if location.kind() == pafs.FileType.File:
        found = next((f for f in FORMATS if f.suffix and location.path.endswith(f.suffix)), None)
        if found is None:
            raise DataError(f"data.source: {location.uri!r} is a file but not an {_either(_suffixes())}; "
                            "expected one of those, or a folder")
        return found
    claiming = [f for f in FORMATS if f.folder and f.claims is not None]
    default = next(f for f in FORMATS if f.folder and f.claims is None)
    entries = location.listing()
    if not entries:  # what it could have held: first what any folder is read as
        raise DataError(f"{location.path}: no {_either([f.holds or f.folder for f in [default, *claiming]])} found")
    return next((f for f in claiming if f.claims(entries)), default)


def _suffixes() -> list[str]:
    return [f.suffix for f in FORMATS if f.suffix]


def _either(words: list[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    return " or ".join(filter(None, [", ".join(words[:-1]), words[-1]]))


def load_source(source: str, shaping: Shaping = GREY_AS_STORED, scratch: Path | None = None) -> Source:
    """A whole source in memory (small sources, tests, benchmarks); any bad input is an error."""
    with tempfile.TemporaryDirectory(prefix="gan-source-", dir=scratch) as tmp:
        return read_all(open_source(source, shaping, Path(tmp)))


def peek_source(source: str, holdout_fraction: float, shaping: Shaping = GREY_AS_STORED, columns: tuple[str, str] = ("image", "label"),
                on_bad_input: str = "fail", classes: tuple[str, ...] = ()) -> tuple[tuple[int, ...], int]:
    """(image shape, approximate training rows) of a source, from its listing and its first images; with
    `on_bad_input` fail, a listing with bad inputs (stray files, empty or too small classes, classes outside
    `classes`) is an error already. Bad images themselves are found by ingest, which reads every one."""
    if source in bundled.BUNDLED:
        shape, rows = shaped_size(bundled.BUNDLED[source].image_shape, shaping, source), bundled.BUNDLED[source].rows
        return tuple(shape), int(rows * (1 - holdout_fraction))
    with tempfile.TemporaryDirectory(prefix="gan-source-") as tmp:
        rows, small = drop_small_classes(declare_classes(open_source(source, shaping, Path(tmp), columns, peek=True), classes),
                                         holdout_fraction)
        if on_bad_input == "fail":
            raise_problems(list(rows.problems) + small, rows.where)
        if not len(rows):
            raise_problems(list(rows.problems), rows.where)
            raise DataError(f"data.source: {source!r} holds no images")
        first, _, bad = next(read_rows(rows, np.arange(min(len(rows), 16))))
        raise_problems([] if len(first) else bad, rows.where)
        return tuple(first[0].shape), int(len(rows) * (1 - holdout_fraction))
