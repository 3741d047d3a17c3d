"""Duplicate images: the same pixels once shaped, found over the whole data set in bounded memory. The later one read is
the copy, a bad input that names the first."""

import numpy as np

from gan.data.errors import Problem
from gan.data.rows import Rows


class SeenImages:
    """Hashes of the images kept so far, in sorted numpy runs merged as they grow (24 bytes per image, where a
    Python set would take ten times that): duplicates are found over the whole data set in bounded memory per row."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (first hash sorted, second hash, row)

    def first_rows(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """For each image's hash pair, the row that had it before, or -1."""
        found = np.full(len(a), -1, np.int64)
        for keys, seconds, rows in self.runs:
            at = np.minimum(np.searchsorted(keys, a), len(keys) - 1)
            hit = (keys[at] == a) & (seconds[at] == b) & (found < 0)
            found[hit] = rows[at[hit]]
        return found

    def add(self, a: np.ndarray, b: np.ndarray, rows: np.ndarray) -> None:
        if not len(a):
            return
        order = np.argsort(a, kind="stable")
        self.runs.append((a[order], b[order], rows[order]))
        while len(self.runs) > 1 and 2 * len(self.runs[-1][0]) >= len(self.runs[-2][0]):  # like sizes: merge, log-many runs
            last, before = self.runs.pop(), self.runs.pop()
            joined = [np.concatenate(pair) for pair in zip(before, last)]
            order = np.argsort(joined[0], kind="stable")
            self.runs.append(tuple(x[order] for x in joined))


def first_copies(images: np.ndarray, good: np.ndarray, seen: SeenImages, rows: Rows, problems: list[Problem]) -> np.ndarray:
    """Mask of rows whose pixels were not seen before, in earlier chunks or earlier in this one; each copy becomes a
    problem naming the first."""
    a, b = pixel_hashes(images)
    first = seen.first_rows(a, b)
    order = np.lexsort((np.arange(len(a)), b, a))  # equal images side by side, earliest first
    starts = np.r_[True, (a[order][1:] != a[order][:-1]) | (b[order][1:] != b[order][:-1])]
    leader = np.empty(len(a), np.int64)
    leader[order] = order[np.maximum.accumulate(np.where(starts, np.arange(len(a)), 0))]
    first = np.where((first < 0) & (leader != np.arange(len(a))), good[leader], first)
    keep = first < 0
    problems += [Problem(rows.reader.name(int(row)), f"the same image as {rows.reader.name(int(orig))} (a duplicate)")
                 for row, orig in zip(good[~keep], first[~keep])]
    seen.add(a[keep], b[keep], good[keep])
    return keep


def pixel_hashes(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit multiply-add hashes of each image's bytes, with fixed random odd weights per 8-byte word:
    vectorised (a Python hash per image costs more than writing the dataset), and equal for equal images."""
    flat = images.reshape(len(images), -1)
    pad = -flat.shape[1] % 8
    words = np.pad(flat, ((0, 0), (0, pad))).view(np.uint64) if pad else np.ascontiguousarray(flat).view(np.uint64)
    weights = np.random.default_rng(words.shape[1]).integers(1, 2**63, (2, words.shape[1]), dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        a, b = ((words * w).sum(axis=1, dtype=np.uint64) for w in weights)
    return a, b
