"""Stage 1: read the configured source and publish it as a Parquet dataset with a manifest."""

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from prefect import task

from gan import files
from gan.config import ConfigError, check_recipe
from gan.data.inputs import forget_source_inputs, inputs_checksum, source_checksum, source_inputs
from gan.data.manifest import FORMAT_VERSION, QUARANTINE, is_complete, read_inputs
from gan.data.rows import declare_classes
from gan.data.shaping import Shaping
from gan.data.sources import open_source, peek_source
from gan.data.writer import WriteOptions, write_dataset
from pipelines.config import PipelineConfig, cache_key, check_batch_fits, fingerprint, shard_loader
from pipelines.errors import raise_naming, retry_unless_user_error
from pipelines.faults import maybe_fail, maybe_kill
from pipelines.provenance import stage_code
from pipelines.stages import Step
from pipelines.workspace import Workspace, datasets


def shaping(cfg: PipelineConfig) -> Shaping:
    """What `data.channels`, `data.image_size` and `data.resize_filter` convert every image to."""
    return Shaping(cfg.data.channels, cfg.data.image_size, cfg.data.resize_filter)


def settings_key(cfg: PipelineConfig) -> str:
    """Everything besides the source's bytes that decides a dataset's content (the shard size does not)."""
    d = cfg.data
    return fingerprint(dataclasses.asdict(shaping(cfg)), d.holdout_fraction, d.split_seed, d.image_column, d.label_column,
                       d.classes, d.on_bad_input, FORMAT_VERSION)


def dataset_dir(cfg: PipelineConfig, checksum: str) -> Path:
    """The dataset's folder is named by what determines its content: source bytes, shaping and split settings."""
    return Workspace.of(cfg.runtime.workdir).datasets / fingerprint(checksum, settings_key(cfg))


def parent_version(cfg: PipelineConfig, inputs: list[tuple[str, str]]) -> tuple[dict, dict | None]:
    """The manifest's lineage: the latest dataset made from the same source with the same settings (its parent), and
    which input files were added, changed or removed since; and those files by name, for `changes.json` beside the
    manifest (None without a parent)."""
    same = [(m["created"], f, m) for f, m in datasets(Workspace.of(cfg.runtime.workdir))
            if m.get("source_location") == cfg.data.source and m.get("settings_key") == settings_key(cfg)]
    lineage = {"source_location": cfg.data.source, "settings_key": settings_key(cfg), "parent": None}
    if not same:
        return lineage, None
    _, folder, manifest = max(same, key=lambda t: t[0])
    before, now = read_inputs(folder), dict(inputs)
    changes = {
        "added": sorted(n for n in now if n not in before),
        "changed": sorted(n for n in now if n in before and before[n] != now[n]),
        "removed": sorted(n for n in before if n not in now),
    }
    lineage["parent"] = {"folder": folder.name, "fingerprint": manifest["fingerprint"], "rows": manifest["rows"]}
    lineage["changes"] = {kind: len(names) for kind, names in changes.items()}
    lineage["changes_first"] = {kind: names[:10] for kind, names in changes.items() if names}
    return lineage, changes


def ingest(cfg: PipelineConfig) -> str:
    """Write (or find already written) the dataset for `cfg.data`; return its folder."""
    maybe_fail("ingest", kill_here=False)  # `kill:ingest` is once a shard is written (`shard_written`)
    inputs = source_inputs(cfg.data.source)  # as the cache key read them, unless a file changed since
    forget_source_inputs()
    checksum = inputs_checksum(inputs)
    out = dataset_dir(cfg, checksum)
    if is_complete(out):
        print(f"[ingest] dataset already complete: {out}")
        return str(out)
    workspace = Workspace.of(cfg.runtime.workdir)
    for parent in (out.parent, workspace.root / "scratch"):  # what killed ingests left on this host
        files.remove_stale_temporaries(parent)
    lineage, changes = parent_version(cfg, inputs)
    if lineage["parent"]:
        counts = ", ".join(f"{n} {kind}" for kind, n in lineage["changes"].items())
        print(f"[ingest] a new version of the dataset in {lineage['parent']['folder'][:12]}: {counts} input file(s)")
    workers = cfg.data.ingest_workers or max(1, (os.cpu_count() or 1) - 1)  # one core writes the shards
    options = WriteOptions(cfg.data.on_bad_input, cfg.data.shard_mb, workers, workspace.root / "quarantine" / f"{out.name}.json",
                           shard_written(cfg))
    print(f"[ingest] reading {cfg.data.source} ({len(inputs)} file(s); {workers} decoding process(es))")
    with files.scratch_space(workspace.root / "scratch") as scratch:  # unpacked arrays, copies of remote files
        rows = open_source(cfg.data.source, shaping(cfg), scratch, (cfg.data.image_column, cfg.data.label_column), workers)
        rows = declare_classes(rows, tuple(cfg.data.classes))
        try:
            manifest = write_dataset(rows, out, cfg.data.holdout_fraction, cfg.data.split_seed, checksum,
                                     options, lineage, inputs, changes)
        except OSError as err:
            raise_naming(err, out)  # a full disk names the dataset (none is left)
    print(f"[ingest] wrote {manifest['rows']} rows of {manifest['image_shape']} in "
          f"{sum(map(len, manifest['shards'].values()))} shard(s) to {out}")
    if manifest["quarantined"]:
        print(f"[ingest] skipped {manifest['quarantined']} bad input(s), listed in {out / QUARANTINE}")
    return str(out)


def shard_written(cfg: PipelineConfig) -> Callable[[str, int], None]:
    """Progress, shard by shard: a large source takes minutes. Also where a test's `kill:ingest` strikes: the dataset
    half written, its manifest not yet."""
    def written(name: str, rows: int) -> None:
        print(f"[ingest] {name}: {rows:,} rows so far in {name.split('/')[0]}", flush=True)
        maybe_kill("ingest", cfg.runtime.workdir, "with a shard written and no manifest")

    return written


def preflight(cfg: PipelineConfig) -> tuple[int, ...]:
    """Fail fast on bad input before any service starts: unreadable source, a model that cannot fit it. Returns the shape
    the source's images will have."""
    image_shape, train_rows = peek_source(cfg.data.source, cfg.data.holdout_fraction, shaping(cfg),
                                          (cfg.data.image_column, cfg.data.label_column), cfg.data.on_bad_input,
                                          tuple(cfg.data.classes))
    check_recipe(cfg.recipe, image_shape)
    check_batch_fits(cfg, train_rows)
    check_local_cpus(cfg)
    return tuple(image_shape)


def check_local_cpus(cfg: PipelineConfig) -> None:
    """On the local Ray a run starts, the workers' CPU reservations must fit this machine, or training waits for a
    placement that never comes; with Ray Data reading (`ray.loader`), they must also leave it one CPU, or it waits forever."""
    cpus = os.cpu_count() or 1
    reserved = cfg.ray.num_workers * cfg.ray.cpus_per_worker
    streamed = shard_loader(cfg) == "ray-data"
    room = cpus - 1 if streamed else cpus
    if not os.environ.get("RAY_ADDRESS") and reserved > room:
        raise ConfigError(
            f"config error: ray.num_workers x ray.cpus_per_worker = {cfg.ray.num_workers} x {cfg.ray.cpus_per_worker} reserves "
            f"{reserved:g} of this machine's {cpus} CPUs; at most {room:g} may go to workers"
            f"{' (Ray Data reads with the rest)' if streamed else ''}: lower ray.cpus_per_worker (the workers' torch threads do "
            "not depend on it)"
        )


def _key(context, parameters: dict) -> str:  # noqa: ANN001 - Prefect's callback signature
    cfg: PipelineConfig = parameters["cfg"]
    workdir = Workspace.of(cfg.runtime.workdir).root
    return cache_key("ingest", source_checksum(cfg.data.source), fingerprint(cfg.data), workdir, stage_code("ingest"))


@task(name="ingest", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error,
      cache_key_fn=_key, persist_result=True, result_serializer="json")
def ingest_task(cfg: PipelineConfig) -> str:
    """Source -> Parquet dataset folder (cached on the source checksum, ingest config and ingest code)."""
    return ingest(cfg)


STEPS = (Step("dataset", ingest_task, lambda cfg, run: (cfg,), lambda path: Path(path, "manifest.json").is_file()),)
