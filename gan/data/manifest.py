"""What a dataset folder holds, and its manifest.

A dataset is a folder: `train/part-00000.parquet`, ..., `heldout/part-00000.parquet`, ..., `manifest.json` (which
lists the shards), `inputs.parquet` (every source file and its sha256, for incremental versions) and, when bad inputs
were skipped, `quarantine.json`. Each row is one image: `image` (raw uint8 bytes, C*H*W), `label` (int64), `index`
(row in the source). The folder appears under its final name only once complete (`gan.data.writer`).
"""

import json
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gan.data.errors import DataError, Problem
from gan.hashing import Digest

MANIFEST, QUARANTINE, INPUTS, CHANGES = "manifest.json", "quarantine.json", "inputs.parquet", "changes.json"
SPLITS = ("train", "heldout")
FORMAT_VERSION = 3  # 2: rows stored in shuffled order; 3: sharded, listed in the manifest, inputs kept
SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("index", pa.int64())])


class Described(Protocol):
    """What the manifest records of the source (`gan.data.rows.Rows`; named here so that reading a dataset needs none
    of the code that reads sources)."""

    labels: np.ndarray
    description: str
    class_names: tuple[str, ...]
    labelled: bool


class WrittenSplit(Protocol):
    """What the manifest records of a split as written (`gan.data.writer.Shards`)."""

    rows: int
    files: list[str]
    labels: list[np.ndarray]
    digest: Digest


def manifest_of(rows: Described, splits: dict[str, WrittenSplit], image_shape: tuple, checksum: str, holdout_fraction: float,
                seed: int, quarantined: int, lineage: dict | None) -> dict:
    """The manifest of a dataset as written: its shards, shape, class counts and names, where it came from, and its
    fingerprint (a digest of the image shape and every split's shard digests)."""
    labels = {name: np.concatenate(s.labels) if s.labels else np.zeros(0, np.int64) for name, s in splits.items()}
    digest = Digest(json.dumps([int(n) for n in image_shape]), *(shards.digest.raw() for shards in splits.values()))
    classes = len(rows.class_names) or int(rows.labels.max()) + 1
    return {
        "format_version": FORMAT_VERSION,
        "schema": {f.name: str(f.type) for f in SCHEMA},
        "image_shape": [int(n) for n in image_shape],
        "rows": {name: s.rows for name, s in splits.items()},
        "shards": {name: s.files for name, s in splits.items()},
        "class_counts": {name: _class_counts(values) for name, values in labels.items()},
        "num_classes": classes,
        # Label k's name; a source without names numbers them, an unlabelled one has the single class "0".
        "class_names": list(rows.class_names) or [str(k) for k in range(classes)],
        "labelled": rows.labelled,
        "source": rows.description,
        "source_checksum": checksum,
        "fingerprint": digest.hex(),
        "holdout_fraction": holdout_fraction,
        "split_seed": seed,
        "quarantined": quarantined,
        "created": time.time(),
        **(lineage or {}),
    }


def _class_counts(labels: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(labels, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def quarantine_report(problems: list[Problem], where: str) -> dict:
    """The quarantine report: every bad input of a source, with its reason."""
    return {"source": where, "count": len(problems), "inputs": [{"input": p.input, "reason": p.reason} for p in problems]}


def is_complete(dataset_dir: Path) -> bool:
    return (Path(dataset_dir) / MANIFEST).is_file()


def read_manifest(dataset_dir: Path) -> dict:
    """A dataset's manifest; a DataError for a folder that is no complete dataset of this format version."""
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{dataset_dir}: not a dataset (no {MANIFEST}); run the ingest stage first")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
    return manifest


def read_inputs(dataset_dir: Path) -> dict[str, str]:
    """{input name: sha256} of the source files a dataset was made from ({} for one written before inputs were kept)."""
    path = Path(dataset_dir) / INPUTS
    if not path.is_file():
        return {}
    table = pq.read_table(path)
    return dict(zip(table.column("input").to_pylist(), table.column("sha256").to_pylist()))
