"""How a Ray Train worker gets its rows with `ray.loader: parquet`: read straight from the dataset's Parquet files, an
equal, contiguous share per rank, no row on two ranks, the same batches for the same (seed, rank, epoch)."""

from pathlib import Path

import numpy as np
import torch

from gan.config import TrainConfig
from gan.data.rows import Source
from gan.data.writer import write_dataset
from gan.distributed import WorkerContext
from pipelines.cluster.worker import parquet_batches


def test_each_rank_reads_its_own_equal_share_of_the_train_split(tmp_path: Path) -> None:
    images = np.zeros((130, 1, 4, 4), np.uint8)
    images[:, 0, 0, 0] = np.arange(130)  # each row told apart by its first pixel
    manifest = write_dataset(Source(images, np.arange(130) % 10, "rows"), tmp_path / "ds", 0.2, 0, "x")
    per_rank = manifest["rows"]["train"] // 3
    train = TrainConfig(batch_size=8, seed=3)
    seen = []
    for rank in range(3):
        batches = parquet_batches(tmp_path / "ds", train, WorkerContext(rank, 3))
        epoch = [b for b in batches(0)]
        assert len(epoch) == per_rank // 8 and all(x.shape == (8, 1, 4, 4) and x.dtype == torch.uint8 for x, _ in epoch)
        rows = torch.cat([x for x, _ in epoch])[:, 0, 0, 0].tolist()
        assert len(set(rows)) == len(rows)  # no row twice in an epoch
        assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch, batches(0)))  # an epoch's batches: the same on a resume
        assert [x[0, 0, 0, 0] for x, _ in epoch] != [x[0, 0, 0, 0] for x, _ in batches(1)]  # reshuffled every epoch
        seen.append({int(x[i, 0, 0, 0]) for e in range(4) for x, _ in batches(e) for i in range(len(x))})
    assert len(set.union(*seen)) == sum(map(len, seen)) and all(len(rows) <= per_rank for rows in seen)  # no row on two ranks
