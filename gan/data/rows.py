"""A source opened for reading: `Rows`, its labels and names now and its images on demand through a `Reader`, read a chunk
at a time (in a process pool when decoding is the slow part); `Source`, images held in memory; the rules that turn rows
into bad inputs as a whole (classes outside `data.classes`, classes too small to split)."""

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np

from gan.data.errors import Problem, raise_problems
from gan.data.shaping import Shaping

CHUNK_ROWS = 256  # image files per read job: small enough to keep memory flat, large enough to amortise a job's overhead
ARRAY_CHUNK_ROWS = 4096  # rows per read of an array: a copy, no decoding


@dataclass(frozen=True)
class Source:
    """Images held in memory, before splitting (small sources, tests and benchmarks)."""

    images: np.ndarray  # [N, C, H, W] uint8
    labels: np.ndarray  # [N] int64
    description: str
    class_names: tuple[str, ...] = ()  # name of label k at position k; () when labels are plain numbers
    labelled: bool = True  # False: the source has no classes and every label is 0


@dataclass(frozen=True)
class Rows:
    """A source opened for reading: labels and names of its rows now, their images on demand."""

    reader: "Reader"
    labels: np.ndarray  # [N] int64, only rows whose listing was sound
    description: str
    class_names: tuple[str, ...] = ()
    labelled: bool = True
    problems: tuple[Problem, ...] = ()  # found while listing: these inputs have no row
    origin: str = ""  # the source as configured, for messages about it as a whole

    @property
    def where(self) -> str:
        return self.origin or self.description

    def __len__(self) -> int:
        return len(self.labels)


# A reader turns row numbers into a job: a picklable call returning (images [k, C, H, W] uint8 of the rows that
# read, those rows, problems of the others). `decodes` says whether a job is worth a process of its own.
Job = Callable[[], tuple[np.ndarray, np.ndarray, list[Problem]]]


@dataclass(frozen=True)
class Reader:
    job: Callable[[np.ndarray], Job]
    decodes: bool
    name: Callable[[int], str]  # which input a row comes from, for messages


def read_rows(rows: Rows, order: np.ndarray, workers: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray, list[Problem]]]:
    """Read rows in `order`, CHUNK_ROWS at a time, in that order; jobs run in `workers` processes when they decode."""
    chunk = CHUNK_ROWS if rows.reader.decodes else ARRAY_CHUNK_ROWS
    jobs = (rows.reader.job(order[i:i + chunk]) for i in range(0, len(order), chunk))
    if workers <= 1 or not rows.reader.decodes or len(order) <= chunk:
        yield from (job() for job in jobs)
        return
    yield from decode_jobs(jobs, workers)


def decode_jobs(jobs: Iterable[Job], workers: int) -> Iterator:
    """Run jobs in a process pool, results in submission order, at most 2 x workers in flight (bounded memory).
    'spawn', not fork: the caller may hold threads (Prefect, Ray) that a forked child would inherit mid-lock."""
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending: deque = deque()
        for job in jobs:
            pending.append(pool.submit(job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def read_all(rows: Rows, workers: int = 1) -> Source:
    """Every row in memory, in source order; any bad input is an error."""
    chunks, problems, first = [], list(rows.problems), None
    for images, good, bad in read_rows(rows, np.arange(len(rows)), workers):
        problems += bad
        images, good, first = same_size(images, good, first, rows, problems)
        chunks.append(images)
    raise_problems(problems, rows.where)
    images = np.concatenate(chunks) if chunks else np.zeros((0, 1, 1, 1), np.uint8)
    return Source(images, rows.labels, rows.description, rows.class_names, rows.labelled)


def same_size(images: np.ndarray, good: np.ndarray, first: tuple | None, rows: Rows, problems: list[Problem]) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """Images kept at their own size (data.image_size 0) must all match the first one read: `first` is its
    (shape, name), None until one was read. Returns the images that match, their rows and `first`."""
    if len(good) and first is None:
        first = (images[0].shape, rows.reader.name(int(good[0])))
    if not len(good) or (images.dtype != object and images.shape[1:] == first[0]):
        return images, good, first
    (shape, name) = first
    fits = np.array([image.shape == shape for image in images])
    problems += [Problem(rows.reader.name(int(r)), f"{i.shape[2]}x{i.shape[1]} differs from {shape[2]}x{shape[1]} of {name}; "
                         "set data.image_size to resize") for i, r in zip(images[~fits], good[~fits])]
    kept = [i for i, f in zip(images, fits) if f]
    return (np.stack(kept) if kept else np.zeros((0, *shape), np.uint8)), good[fits], first


def stack_images(images: list[np.ndarray], shaping: Shaping) -> np.ndarray:
    """One read job's decoded images as [k, C, H, W]; an object array of them when their sizes differ."""
    if not images:
        return np.zeros((0, shaping.channels, 1, 1), np.uint8)
    if len({i.shape for i in images}) > 1:  # sizes differ (image_size 0): the writer names them
        ragged = np.empty(len(images), dtype=object)
        for k, image in enumerate(images):
            ragged[k] = image
        return ragged
    return np.stack(images)


def declare_classes(rows: Rows, classes: tuple[str, ...]) -> Rows:
    """With `data.classes` declared, labels follow its order (stable as data arrive) and any class folder, class name or
    integer label outside it is a bad input; its rows get label -1 and are never written."""
    if not classes or not rows.labelled:
        return rows
    if rows.class_names:
        ids = {name: k for k, name in enumerate(classes)}
        labels = np.array([ids.get(name, -1) for name in rows.class_names], np.int64)[rows.labels]

        def reason(row: int) -> str:
            return f"class {rows.class_names[rows.labels[row]]!r} is not one of data.classes"
    else:
        labels = np.where(rows.labels < len(classes), rows.labels, -1)

        def reason(row: int) -> str:
            return f"label {rows.labels[row]} is outside data.classes (0..{len(classes) - 1})"
    problems = tuple(Problem(rows.reader.name(int(r)), reason(int(r))) for r in np.flatnonzero(labels < 0))
    return dataclasses.replace(rows, labels=labels, class_names=tuple(classes), problems=rows.problems + problems)


def drop_small_classes(rows: Rows, holdout_fraction: float) -> tuple[Rows, list[Problem]]:
    """A class too small to have an image both in training and held out is a bad input (a class, not a file):
    its rows get label -1 and are never written."""
    values, counts = np.unique(rows.labels[rows.labels >= 0], return_counts=True)
    small = [(int(v), int(n)) for v, n in zip(values, counts) if not 1 <= round(n * holdout_fraction) < n]
    if not small:
        return rows, []
    need = next(n for n in range(2, 10**6) if 1 <= round(n * holdout_fraction) < n)
    problems = [Problem(f"{rows.where}: class {rows.class_names[v] if rows.class_names else v!r}",
                        f"{n} image(s); with data.holdout_fraction {holdout_fraction:g} a class needs at least {need}, "
                        "so that one is trained on and one held out") for v, n in small]
    labels = np.where(np.isin(rows.labels, [v for v, _ in small]), -1, rows.labels)
    return dataclasses.replace(rows, labels=labels), problems
