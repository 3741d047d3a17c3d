"""Stage 1: read the configured source and publish it as a Parquet dataset with a manifest."""

import dataclasses
import os
from pathlib import Path

from prefect import task

from gan import data
from gan.config import ConfigError, check_recipe
from pipelines.codebase import stage_code
from pipelines.config import PipelineConfig, fingerprint
from pipelines.runtime import Workspace
from pipelines.stages import cache_key, maybe_fail, retry_unless_user_error


def shaping(cfg: PipelineConfig) -> data.Shaping:
    """What `data.channels`, `data.image_size` and `data.resize_filter` convert every image to."""
    return data.Shaping(cfg.data.channels, cfg.data.image_size, cfg.data.resize_filter)


def dataset_dir(cfg: PipelineConfig, checksum: str) -> Path:
    """The dataset's folder is named by what determines its content: source bytes, shaping and split settings."""
    key = fingerprint(checksum, dataclasses.asdict(shaping(cfg)), cfg.data.holdout_fraction, cfg.data.split_seed, data.FORMAT_VERSION)
    return Workspace.of(cfg.runtime.workdir).datasets / key


def find_dataset(cfg: PipelineConfig, data_fingerprint: str) -> Path | None:
    """The workspace's dataset whose manifest has this content fingerprint (a registered version's `dataset_fingerprint`),
    if any. Folders are named by source bytes and split settings, so the manifests are what tells the content."""
    for folder in sorted(Workspace.of(cfg.runtime.workdir).datasets.glob("[!.]*")):  # not the temporaries of a writer
        try:
            if data.read_manifest(folder)["fingerprint"] == data_fingerprint:
                return folder
        except data.DataError:  # incomplete, or written in an older format
            continue
    return None


def ingest(cfg: PipelineConfig) -> str:
    """Write (or find already written) the dataset for `cfg.data`; return its folder."""
    maybe_fail("ingest")
    checksum = data.source_checksum(cfg.data.source)
    out = dataset_dir(cfg, checksum)
    if data.is_complete(out):
        print(f"[ingest] dataset already complete: {out}")
        return str(out)
    data.remove_stale_temporaries(out.parent)
    print(f"[ingest] reading {cfg.data.source}")
    source = data.load_source(cfg.data.source, shaping(cfg))
    manifest = data.write_dataset(source, out, cfg.data.holdout_fraction, cfg.data.split_seed, checksum)
    print(f"[ingest] wrote {manifest['rows']} rows of {manifest['image_shape']} to {out}")
    return str(out)


def preflight(cfg: PipelineConfig) -> None:
    """Fail fast on bad input before any service starts: unreadable source, a model that cannot fit it."""
    image_shape, train_rows = data.peek_source(cfg.data.source, cfg.data.holdout_fraction, shaping(cfg))
    check_recipe(cfg.recipe, image_shape)
    check_batch_fits(cfg, train_rows)
    check_local_cpus(cfg)


def check_local_cpus(cfg: PipelineConfig) -> None:
    """On the local Ray a run starts, the workers' CPU reservations must leave one CPU for Ray Data's reads,
    or training waits for them forever."""
    cpus = os.cpu_count() or 1
    reserved = cfg.ray.num_workers * cfg.ray.cpus_per_worker
    if not os.environ.get("RAY_ADDRESS") and reserved > cpus - 1:
        raise ConfigError(
            f"config error: ray.num_workers x ray.cpus_per_worker = {cfg.ray.num_workers} x {cfg.ray.cpus_per_worker} reserves "
            f"{reserved:g} of this machine's {cpus} CPUs; at most {cpus - 1:g} may go to workers (Ray Data reads with the rest): "
            "lower ray.cpus_per_worker (the workers' torch threads do not depend on it)"
        )


def check_batch_fits(cfg: PipelineConfig, train_rows: int) -> None:
    """Every worker must get at least one full batch per epoch."""
    per_worker = train_rows // cfg.ray.num_workers
    if per_worker < cfg.train.batch_size:
        raise data.DataError(
            f"train.batch_size = {cfg.train.batch_size}: each of {cfg.ray.num_workers} workers holds only {per_worker} "
            "training images; lower train.batch_size or ray.num_workers"
        )


def _key(context, parameters: dict) -> str:  # noqa: ANN001 - Prefect's callback signature
    cfg: PipelineConfig = parameters["cfg"]
    workdir = Workspace.of(cfg.runtime.workdir).root
    return cache_key("ingest", data.source_checksum(cfg.data.source), fingerprint(cfg.data), workdir, stage_code("ingest"))


@task(name="ingest", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error,
      cache_key_fn=_key, persist_result=True, result_serializer="json")
def ingest_task(cfg: PipelineConfig) -> str:
    """Source -> Parquet dataset folder (cached on the source checksum, ingest config and ingest code)."""
    return ingest(cfg)
