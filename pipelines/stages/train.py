"""Stage 2: DDP GAN training on Ray Train: what the run is (its name, its parent, its config) and what its workers get;
the driver is `cluster/fit.py`, here or on the cluster as a Ray Job (`cluster/job.py`)."""

from pathlib import Path

from prefect import task

from gan.config import SCHEDULE_KEYS, warm_started
from gan.data.manifest import read_manifest
from gan.data.reader import load_split
from gan.metrics.fid import gaussian_stats
from gan.metrics.quick_fid import QuickFID
from pipelines import console, yardstick
from pipelines.cluster import fit, job
from pipelines.cluster.ray import trains_as_job
from pipelines.config import PipelineConfig, cache_key, fingerprint, mirror_tag, shard_loader
from pipelines.errors import retry_unless_user_error
from pipelines.faults import NAN_HOOK, maybe_fail, nan_at_step
from pipelines.provenance import stage_code
from pipelines.stages import Step
from pipelines.registry import warm_start
from pipelines.registry.warm_start import Parent
from pipelines.workspace import Workspace


def training_key(cfg: PipelineConfig) -> str:
    """What a run's weights are made of besides its data and its parent: the recipe less what only schedules or observes
    the run (`gan.config.SCHEDULE_KEYS`: raising train.epochs continues the same run), the workers, how they read their rows
    (`ray.loader`: each way gives a rank its own rows), whether they mirror them (data.mirror) and the training code
    (`provenance.STAGE_CODE`). Not how the parent was named: the parent itself counts (`run_name`)."""
    train = cfg.train.model_dump(mode="json", exclude=SCHEDULE_KEYS)
    return fingerprint(cfg.model, train, cfg.reg, cfg.optim, cfg.ray.num_workers, cfg.ray.use_gpu, shard_loader(cfg), stage_code("train"),
                       *mirror_tag(cfg))


def schedule_key(cfg: PipelineConfig) -> str:
    """What only schedules or observes the run: not part of its name, but of the train stage's cache key, so that a
    change (more epochs) trains on under the same name instead of taking the finished result from the cache."""
    return fingerprint(cfg.train.model_dump(mode="json", include=SCHEDULE_KEYS - {"init_from", "init_missing"}))


def run_name(cfg: PipelineConfig, manifest: dict, parent: dict | None = None) -> str:
    """Same data, same training, same parent (its state's digest; none for a cold start): same run, so a re-run resumes
    its checkpoints."""
    drill = nan_at_step()  # the watchdog's drill trains a run of its own
    return "train-" + fingerprint(manifest["fingerprint"], training_key(cfg), parent and parent["digest"], *([drill] if drill else []))


def run_config(cfg: PipelineConfig, parent: dict | None) -> PipelineConfig:
    """The config the workers train with: a warm start trains train.init_budget of the epochs and the time budget."""
    return cfg if parent is None else cfg.model_copy(update={"train": warm_started(cfg.train)})


def quick_fid_file(cfg: PipelineConfig, dataset_dir: Path, manifest: dict) -> Path | None:
    """The evaluation's feature network (`yardstick.quick_fid_extractor`: the classifier or the encoder) and the training
    images' feature statistics in one file, which every worker gets as bytes (a remote cluster's workers do not see this
    machine's files); None when quick FIDs are off."""
    if not cfg.train.fid_every_epochs:
        return None
    name, key = yardstick.quick_fid_extractor(cfg, manifest)
    name_parts = [key, "quickfid", str(cfg.train.fid_samples), str(cfg.eval.seed), *mirror_tag(cfg)]
    path = Workspace.of(cfg.runtime.workdir).classifiers / ("-".join(name_parts) + ".pt")
    if path.is_file():
        QuickFID.load(path, str(path))  # a file that is not one is refused here, naming it, before the workers get its bytes
    else:
        extractor = yardstick.feature_extractor(cfg, dataset_dir, manifest, name=name)
        feats, _ = extractor.embed(yardstick.as_trained(cfg, load_split(dataset_dir, "train", yardstick.train_rows(cfg, manifest))[0]))
        stats = gaussian_stats(feats)
        QuickFID(extractor.network, *stats, yardstick.class_mix(manifest), cfg.train.fid_samples, cfg.eval.seed, key).save(path)
    return path


@task(name="warm-start", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error)
def warm_start_task(cfg: PipelineConfig, dataset_dir: str) -> dict | None:
    """train.init_from -> the parent to warm-start from (its training state on this machine), checked against the data;
    None for a cold start. Not cached: an alias such as @champion names another version once the champion moves."""
    manifest = read_manifest(Path(dataset_dir))
    parent = warm_start.resolve(cfg, tuple(manifest["image_shape"]), manifest["num_classes"], manifest["fingerprint"], training_key(cfg))
    return None if parent is None else parent.as_dict()


def _key(context, parameters: dict) -> str:  # noqa: ANN001
    cfg: PipelineConfig = parameters["cfg"]
    manifest = read_manifest(Path(parameters["dataset_dir"]))
    return cache_key("train", run_name(cfg, manifest, parameters.get("parent")), schedule_key(cfg), Workspace.of(cfg.runtime.workdir).root)


@task(name="train", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error,
      cache_key_fn=_key, persist_result=True, result_serializer="json")
def train_task(cfg: PipelineConfig, dataset_dir: str, parent: dict | None = None) -> dict:
    """Dataset (and a parent to warm-start from) -> trained checkpoint (cached on dataset fingerprint + train config +
    training code + parent); the driver runs here, or on the cluster as a Ray Job (`ray.driver`)."""
    maybe_fail("train")
    return train(cfg, dataset_dir, parent)


def train(cfg: PipelineConfig, dataset_dir: str, parent: dict | None = None) -> dict:
    """The run's name and what its workers get (the parent's state, the quick-FID yardstick, the lineage kept beside each
    checkpoint), then the driver, here or as a Ray Job; its output."""
    manifest = read_manifest(Path(dataset_dir))
    name = run_name(cfg, manifest, parent)
    drill = nan_at_step()
    lineage = {"run": name, "training_key": training_key(cfg), "dataset_fingerprint": manifest["fingerprint"], "warm_start": parent,
               **({"drill": {NAN_HOOK: drill}} if drill else {})}  # the registry refuses a drill's model
    init = None if parent is None else str(warm_start.state_file(cfg, Parent.of_dict(parent)))
    quick_fid = quick_fid_file(cfg, Path(dataset_dir), manifest)
    files = {"init_path": init, "quick_fid_path": None if quick_fid is None else str(quick_fid)}
    if trains_as_job(cfg):
        return job.train_as_job(run_config(cfg, parent), dataset_dir, name, lineage, files, console.task_logger())
    return fit.fit(run_config(cfg, parent), dataset_dir, name, lineage, **files, logger=console.task_logger())


STEPS = (
    # A warm start's parent, resolved at each run: @champion names another version once the champion moves.
    Step("warm_start", warm_start_task, lambda cfg, run: (cfg, run["dataset"]), when=lambda cfg: bool(cfg.train.init_from)),
    Step("train", train_task, lambda cfg, run: (cfg, run["dataset"], run["warm_start"]), lambda out: Path(out["checkpoint"]).is_dir()),
)
