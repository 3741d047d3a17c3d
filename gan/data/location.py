"""Where a source is: a file or folder on local disk or behind a `pyarrow.fs` URI (`s3://`, `gs://`, `file://`;
credentials come from the environment), listed and read alike."""

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from gan.data.errors import DataError, one_line

URI_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "abfs", "abfss")


@dataclass(frozen=True)
class Location:
    """A file or folder on local disk or behind a pyarrow.fs URI; `uri` is kept so worker processes can reopen it."""

    uri: str  # the source as configured (a plain path or a URI)
    path: str  # the path within the filesystem

    @functools.cached_property
    def fs(self) -> pafs.FileSystem:
        return filesystem(self.uri)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, path: str) -> "Location":
        return Location(self.uri, path)

    def kind(self) -> pafs.FileType:
        return self.info().type

    def info(self) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path)
        except OSError as err:  # a symbolic link loop, a permission refused
            raise DataError(f"{self.path}: cannot be read ({one_line(err)})") from err

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def listing(self) -> list[pafs.FileInfo]:
        """Entries directly inside this folder, sorted by name, hidden ones (.*) left out."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))
        except OSError as err:
            raise DataError(f"{self.path}: cannot list the folder ({one_line(err)})") from err
        if self.local:  # pyarrow leaves out links it cannot follow: name them, so none goes missing unnoticed
            listed = {i.base_name for i in infos}
            infos += [pafs.FileInfo(os.path.join(self.path, n), pafs.FileType.NotFound) for n in os.listdir(self.path) if n not in listed]
        return sorted((i for i in infos if not i.base_name.startswith(".")), key=lambda i: i.base_name)

    def local_path(self, scratch: Path) -> Path:
        """A local file with this file's bytes: itself on local disk, else a copy in `scratch` (streamed)."""
        if self.local:
            return Path(self.path)
        target = scratch / Path(self.path).name
        with self.fs.open_input_stream(self.path) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return target


def is_uri(source: str) -> bool:
    return "://" in source


@functools.lru_cache(maxsize=8)
def filesystem(source: str) -> pafs.FileSystem:
    if not is_uri(source):
        return pafs.LocalFileSystem()
    return pafs.FileSystem.from_uri(source)[0]


def locate(source: str) -> Location:
    """The Location of `data.source` (which may hold nothing: `gan.data.sources.find` says what a source may be), or a
    DataError for a URI scheme it cannot be, a URI that does not open, or a link to nothing."""
    if is_uri(source):
        scheme = source.split("://", 1)[0]
        if scheme not in URI_SCHEMES:
            raise DataError(f"data.source: {source!r} has scheme {scheme!r}; expected a path or one of {', '.join(s + '://' for s in URI_SCHEMES)}")
        try:
            path = pafs.FileSystem.from_uri(source)[1]
        except (OSError, ValueError, pa.ArrowException) as err:
            raise DataError(f"data.source: {source!r} cannot be opened ({one_line(err)})") from err
    else:
        path = str(Path(source).expanduser().absolute())
    location = Location(source, path)
    if location.kind() == pafs.FileType.NotFound and location.local and Path(path).is_symlink():
        raise DataError(f"data.source: {source!r} cannot be read: a symbolic link that loops or points to nothing")
    return location
