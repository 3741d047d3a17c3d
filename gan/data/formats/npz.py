"""An .npz file (`numpy.savez`) with `images` and optional `labels`: the images memory-mapped, nothing unpickled."""

import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np

from gan.data.arrays import Mapped, array_reader, npy_header
from gan.data.errors import UNREADABLE, DataError, one_line
from gan.data.rows import Rows
from gan.data.shaping import Shaping, shaped_size


def _npy_member(path: Path, name: str, scratch: Path) -> tuple[Path, int, tuple[int, ...]]:
    """(file, data offset, shape) of `name`.npy inside an .npz: in place when stored uncompressed (numpy.savez),
    else unpacked to scratch first (numpy.savez_compressed)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        _check_declared(archive, info, path)
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as f:
                f.seek(info.header_offset)
                name_len, extra_len = struct.unpack("<HH", f.read(30)[26:30])
            return npy_header(path, info.header_offset + 30 + name_len + extra_len, info.file_size)
        target = scratch / f"{path.stem}-{name}.npy"
        with archive.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return npy_header(target, 0)


def _check_declared(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    """A member's .npy header must declare the bytes the member holds: a shape that claims more would read past the
    array, into the archive's other members or its end, or have numpy allocate what the header says. (An object array
    has no fixed size: the dtype checks after this one name it.)"""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(member)
        declared = member.tell() + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared != info.file_size and not dtype.hasobject:
        raise DataError(f"{path}: {info.filename!r} declares shape {shape} of {dtype} ({declared} bytes with its header) but holds "
                        f"{info.file_size} bytes; expected an .npz written by numpy.savez")


def open_npz(path: Path, shaping: Shaping, scratch: Path) -> Rows:
    """An .npz with `images` (uint8 [N, H, W], [N, H, W, C] or [N, C, H, W], C = 1 or 3) and optional `labels`
    (integers >= 0, one per image; without them the source is unlabelled). Channels last wins when both read.
    The images are memory-mapped, never loaded whole; nothing is unpickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            keys = [n.removesuffix(".npy") for n in archive.namelist()]
        if "images" not in keys:
            raise DataError(f"{path}: no 'images' array (it holds {', '.join(map(repr, keys)) or 'nothing'})")
        file, offset, shape = _npy_member(path, "images", scratch)
        labels = _labels(path) if "labels" in keys else None
    except (OSError, *UNREADABLE) as err:  # not a zip, truncated, corrupt, an object array
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot read ({one_line(err)}); expected an .npz written by numpy.savez") from err
    if len(shape) == 3:
        layout = "nhw"
    elif len(shape) == 4 and shape[3] in (1, 3):
        layout = "nhwc"
    elif len(shape) == 4 and shape[1] in (1, 3):
        layout = "nchw"
    else:
        raise DataError(f"{path}: 'images' has shape {shape}; expected [N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 or 3")
    if shape[0] == 0:
        raise DataError(f"{path}: 'images' holds no images")
    images = Mapped(str(file), offset, shape, layout)
    shaped_size(images.image_shape, shaping, str(path))
    reader = array_reader(images, shaping, str(path))
    n = shape[0]
    if labels is None:
        return Rows(reader, np.zeros(n, np.int64), f"{path} ({n} images, unlabelled)", labelled=False)
    if labels.dtype.kind not in "iu" or labels.shape != (n,) or (labels < 0).any():
        raise DataError(f"{path}: 'labels' has dtype {labels.dtype} and shape {labels.shape}; expected {n} integers >= 0, one per image")
    return Rows(reader, labels.astype(np.int64), f"{path} ({n} images, {int(labels.max()) + 1} classes)")


def _labels(path: Path) -> np.ndarray:
    """The `labels` array, read whole once its header is checked against its size; nothing unpickled."""
    with zipfile.ZipFile(path) as archive:
        _check_declared(archive, archive.getinfo("labels.npy"), path)
    with np.load(path, allow_pickle=False) as arrays:
        return arrays["labels"]
