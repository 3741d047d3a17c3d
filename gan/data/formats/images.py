"""Folders of image files (PNG, JPEG, WebP, BMP): one level of class folders gives the labels (sorted names -> 0..K-1),
a flat folder is unlabelled. Decoding is the slow part: read jobs run in a process pool."""

import functools

import numpy as np
import pyarrow.fs as pafs

from gan.data.errors import DataError, Problem, one_line
from gan.data.location import Location, filesystem
from gan.data.rows import Job, Reader, Rows, stack_images
from gan.data.shaping import Shaping, decode_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def open_image_tree(location: Location, shaping: Shaping) -> Rows:
    """A flat folder of images (unlabelled), or one level of class folders of them (sorted names -> 0..K-1).
    Anything else in it is a problem rather than skipped, so no data goes missing unnoticed."""
    entries = location.listing()
    folders = [e for e in entries if e.type == pafs.FileType.Directory]
    problems: list[Problem] = []
    if not folders:  # (an empty folder never gets here: `gan.data.sources.format_of` names what it could have held)
        files = _images_in(location, entries, problems)
        labels, class_names = [0] * len(files), ()
    else:
        problems += [Problem(e.path, "a file beside class folders; move it into one or remove it") for e in entries if e.type != pafs.FileType.Directory]
        files, labels = [], []
        for label, folder in enumerate(folders):
            found = _images_in(location, location.child(folder.path).listing(), problems)
            if not found:
                problems.append(Problem(folder.path, "class folder holds no images"))
            files += found
            labels += [label] * len(found)
        class_names = tuple(f.base_name for f in folders)
    what = f"{len(class_names)} classes" if class_names else "unlabelled"
    reader = Reader(functools.partial(_files_job, location.uri, tuple(files), shaping), decodes=True, name=lambda row: files[row])
    return Rows(reader, np.array(labels, np.int64), f"images in {location.uri} ({len(files)} images, {what})", class_names,
                labelled=bool(class_names), problems=tuple(problems), origin=location.path)


def _images_in(location: Location, entries: list[pafs.FileInfo], problems: list[Problem]) -> list[str]:
    files = []
    for entry in entries:
        if entry.type == pafs.FileType.File and entry.base_name.lower().endswith(IMAGE_SUFFIXES):
            files.append(entry.path)
        elif entry.type == pafs.FileType.Directory:
            problems.append(Problem(entry.path, "a folder inside a class folder; only one level of class folders is read"))
        elif entry.type == pafs.FileType.NotFound:  # a dangling or looping symbolic link
            problems.append(Problem(entry.path, "a symbolic link to nothing readable (dangling or looping)"))
        else:
            problems.append(Problem(entry.path, f"not an image file (expected {', '.join(IMAGE_SUFFIXES)})"))
    return files


def _files_job(uri: str, files: tuple[str, ...], shaping: Shaping, rows: np.ndarray) -> Job:
    return functools.partial(decode_files, uri, [files[r] for r in rows], rows, shaping)


def decode_files(uri: str, paths: list[str], rows: np.ndarray, shaping: Shaping) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """Read and decode image files (one read job); sizes that differ with `size` 0 are left to the caller."""
    fs = filesystem(uri)
    images, good, problems = [], [], []
    for path, row in zip(paths, rows):
        try:
            with fs.open_input_stream(path) as f:
                raw = f.read()
            images.append(decode_image(raw, path, shaping))
            good.append(row)
        except DataError as err:
            problems.append(Problem(path, str(err).removeprefix(f"{path}: ")))
        except OSError as err:
            problems.append(Problem(path, f"cannot be read ({one_line(err)})"))
    return stack_images(images, shaping), np.array(good, np.int64), problems
