"""The pipeline's resolved config: the library's sections plus Ray, registry and workspace settings.

Defaults live in the models below; YAML files and `--set section.key=value` only override them.
"""

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from gan.config import (
    ConfigError, DataConfig, EvalConfig, Recipe, Section, TrainConfig, check_capture, check_eval, check_recipe, device_batch,
)
from gan.data.errors import DataError
from gan.hashing import sha256, sha256_json


PRESETS_DIR = Path(__file__).resolve().parents[1] / "conf" / "presets"
# A registered model version (`--model`, `train.init_from`), and an alias of the model this config registers.
MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<number>\d+))")
OWN_ALIAS = re.compile(r"@[^/@]+")
SET_KEY = re.compile(r"[A-Za-z_]\w*\.[A-Za-z_]\w*", re.ASCII)  # --set's section.key: names only (no space, dot or newline inside)
# The URI schemes of `pyarrow.fs.FileSystem.from_uri`, which Ray Train's storage goes through ("mock" is for tests).
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs")


def is_uri(path: str) -> bool:
    """`scheme://...` rather than a local path."""
    return "://" in path


class TrainSection(TrainConfig):
    """The library's training settings, with the forms of `train.init_from` that this pipeline resolves."""

    @field_validator("init_from")
    @classmethod
    def _registry_form(cls, value: str) -> str:
        if (value.startswith("models:/") and not MODEL_URI.fullmatch(value)) or (value.startswith("@") and not OWN_ALIAS.fullmatch(value)):
            raise ValueError("expected models:/NAME@ALIAS, models:/NAME/VERSION, @ALIAS or a checkpoint folder")
        return value


class RayConfig(Section):
    num_workers: int = Field(2, ge=1, le=4096, description="Ray Train workers (DDP ranks)")
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL instead of gloo")
    cpus_per_worker: float = Field(
        0.5, gt=0, le=256, description="CPUs reserved per worker; leave some free for Ray Data on small machines"
    )
    threads_per_worker: int = Field(
        0, ge=0, le=1024, description="torch threads per worker; 0: the node's cores shared evenly by the workers on it"
    )
    max_failures: int = Field(1, ge=-1, description="worker-group restarts within one fit (-1: unlimited)")
    worker_resources: dict[str, float] = Field(
        {}, description="custom Ray resources each worker also needs (e.g. {'gpu_node': 1}): places workers on the nodes that "
        "declare them with `ray start --resources`"
    )
    placement_retries: int = Field(
        2, ge=-1, description="when the cluster cannot place every worker (a node lost), tries to start the worker group again, "
        "each waiting RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (60 s), before the run fails; -1: wait forever (an autoscaler adds nodes)"
    )
    driver: Literal["auto", "process", "job"] = Field(
        "auto", description="where the training driver runs: 'process' (this one), 'job' (a Ray Job on the cluster at RAY_ADDRESS, "
        "which outlives this process), 'auto' (a job when RAY_ADDRESS is the dashboard's http(s):// address)"
    )
    dashboard: bool = Field(
        False, description="start Ray's dashboard with a local Ray (http://127.0.0.1:8265): about ten more processes of ~90 MB "
        "resident each (BENCHMARKS.md); a cluster's own dashboard is its own"
    )
    loader: Literal["auto", "parquet", "ray-data"] = Field(
        "auto", description="how each worker gets its share of the train split: 'parquet' (reads its rows straight from the "
        "dataset's Parquet files into memory: no Ray Data start-up; the dataset folder must be where every worker sees it, as "
        "for Ray Data's reads), 'ray-data' (Ray Data streams the split to the workers; what train.cache_shard false needs), "
        "'auto' (parquet unless train.cache_shard is false)"
    )
    storage_path: str = Field(
        "", description="where Ray Train keeps its run folders and checkpoints: '' (<workdir>/ray_results), a path (relative to the "
        "current folder), or a pyarrow.fs URI (s3://bucket/prefix, gs://bucket/prefix, file:///shared/path) with credentials "
        "from the environment; the final checkpoint is copied back into the working folder"
    )

    @field_validator("storage_path")
    @classmethod
    def _storage_form(cls, value: str) -> str:
        if not is_uri(value):
            return value
        scheme, _, rest = value.partition("://")
        if scheme not in STORAGE_SCHEMES:
            raise ValueError(f"unknown storage URI scheme {scheme!r}; allowed: {', '.join(STORAGE_SCHEMES)}, or a local path")
        if not rest.strip("/"):
            raise ValueError(f"{scheme}:// names no bucket or folder")
        if scheme == "file" and not rest.startswith("/"):
            raise ValueError("a file:// URI needs an absolute path: file:///shared/path")
        return value


class RegistryConfig(Section):
    model_name: str = Field("mnist-gan", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="registered model name")
    experiment: str = Field("gan-pipeline", min_length=1, description="MLflow experiment name")
    max_memorised_share: float = Field(
        0.2, ge=0, le=1, description="a challenger whose share of samples closer to a training image than 95 % of held-out images are "
        "exceeds this never becomes champion (about 0.05 is chance)",
    )
    tags: dict[str, str] = Field({}, description="extra tags on the registered model version (e.g. the preset a comparison ran)")


class RuntimeConfig(Section):
    workdir: str = Field("gan-work", min_length=1, description="folder (relative to the current one) for datasets, checkpoints, stores")


class PipelineConfig(Recipe):
    """The library's recipe (model, train, reg, optim) and what running it as a pipeline adds."""

    train: TrainSection = Field(default_factory=TrainSection)
    data: DataConfig = Field(default_factory=DataConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @property
    def recipe(self) -> Recipe:
        """The sections that decide how the GAN trains, as the library takes them."""
        return Recipe(model=self.model, train=TrainConfig(**self.train.model_dump()), reg=self.reg, optim=self.optim)

    @property
    def worker_batch(self) -> int:
        """Images per worker per step as the workers batch them: train.gpu_batch_size on GPU workers when set."""
        return device_batch(self.train, self.ray.use_gpu)


def keys(section: str | None = None) -> list[tuple[str, str, str]]:
    """Every config key as (section.key, default, help), in the models' order: what `gan-pipeline keys` prints and
    docs/keys.md shows, read from the typed models, so the help strings are the one description of each key."""
    rows = []
    for name, field in PipelineConfig.model_fields.items():
        if section in (None, name):
            model = field.default_factory()
            for key, f in type(model).model_fields.items():
                rows.append((f"{name}.{key}", json.dumps(getattr(model, key)), f.description or ""))
    return rows


def keys_markdown() -> str:
    """docs/keys.md: one table per section (`gan-pipeline keys --markdown` writes it; tests/test_docs.py keeps it current)."""
    lines = ["# Every config key", "", "Generated from the typed config's help strings by `gan-pipeline keys --markdown > docs/keys.md`;",
             "`gan-pipeline keys [SECTION]` prints the same in a terminal. What the sections mean: [recipes.md](recipes.md#the-switches).", ""]
    for name in PipelineConfig.model_fields:
        lines += [f"## {name}", "", "| key | default | what it does |", "|---|---|---|"]
        lines += [f"| `{key}` | `{default}` | {text.replace('|', '/')} |" for key, default, text in keys(name)]
        lines.append("")
    return "\n".join(lines)


def load_config(paths: str | Path | list | None = None, overrides: list[str] = ()) -> PipelineConfig:
    """Defaults, then each YAML file in order (later files win, key by key), then each `section.key=value`
    override, validated once at the end; then the recipe's cross-section rules and the evaluation's."""
    raw: dict[str, Any] = {}
    files = [] if paths is None else [paths] if isinstance(paths, (str, Path)) else list(paths)
    for path in files:
        for section, values in _read_yaml(Path(path)).items():
            if isinstance(values, dict) and isinstance(raw.get(section), dict):
                raw[section].update(values)
            else:
                raw[section] = values
    for item in overrides:
        _apply_override(raw, item)
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, ", ".join(map(str, files)) or "defaults", overrides)) from None
    from gan.choices import unknown_choice  # noqa: PLC0415 - the tables need torch; a mistyped key should not wait for it

    if bad := unknown_choice(cfg.recipe):
        key, value, allowed = bad
        raise ConfigError(f"config error: {key} = {value!r} ({_origin(key, ', '.join(map(str, files)) or 'defaults', overrides)}): {allowed}")
    check_recipe(cfg.recipe)
    check_capture(cfg.recipe, cfg.ray.num_workers)
    check_eval(cfg.eval)
    if cfg.ray.loader == "parquet" and not cfg.train.cache_shard:
        raise ConfigError("config error: ray.loader = 'parquet' keeps each worker's rows in memory, but train.cache_shard = false "
                          "asks to stream them: set ray.loader to 'ray-data' (or 'auto')")
    return cfg


def preset_path(name: str) -> Path:
    """conf/presets/<name>.yaml, or a clear error listing the presets there are."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise ConfigError(f"preset {name!r} does not exist; known presets: {known}")
    return path


def _read_yaml(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; expected a YAML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start}); expected a YAML file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, got {type(loaded).__name__}")
    return loaded or {}


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's message spans lines and draws a caret; one line instead: where, what was wrong, and inside what."""
    mark, problem, context = (getattr(err, name, None) for name in ("problem_mark", "problem", "context"))
    if mark is None or problem is None:
        return " ".join(str(err).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")


def _apply_override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not SET_KEY.fullmatch(key):
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.epochs=5")
    parts = key.split(".")
    section = raw.setdefault(parts[0], {})
    if not isinstance(section, dict):
        raise ConfigError(f"--set {item!r}: {parts[0]} is not a section")
    try:
        section[parts[1]] = yaml.safe_load(text)  # "5" -> 5, "true" -> True, "[1, 2]" -> list; never eval
    except yaml.YAMLError:
        section[parts[1]] = text


def _describe(err: ValidationError, origin: str, overrides: list[str]) -> str:
    """One line: the key, the value given, what is allowed, and where the value came from."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        model = PipelineConfig.model_fields[first["loc"][0]].annotation if len(first["loc"]) > 1 else PipelineConfig
        what = f"unknown key; allowed here: {', '.join(sorted(model.model_fields))}"
    else:
        what = first["msg"]
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"config error: {key} = {value!r} ({_origin(key, origin, overrides)}): {what}{more}"


def _origin(key: str, files: str, overrides: list[str]) -> str:
    """Where a key's value came from: '--set' when an override names it, a key under it, or a key above it (a list or
    mapping given whole, whose item is at fault: model.g_hidden.0), else the files."""
    given = [o.split("=", 1)[0].strip() for o in overrides]
    return "--set" if any(g == key or g.startswith(key + ".") or key.startswith(g + ".") for g in given) else files


def check_batch_fits(cfg: "PipelineConfig", train_rows: int) -> None:
    """Every worker must get at least one full batch per epoch."""
    per_worker = train_rows // cfg.ray.num_workers
    if per_worker < cfg.worker_batch:
        key = "train.batch_size" if cfg.worker_batch == cfg.train.batch_size else "train.gpu_batch_size"
        raise DataError(
            f"{key} = {cfg.worker_batch}: each of {cfg.ray.num_workers} workers holds only {per_worker} "
            f"training images; lower {key} or ray.num_workers"
        )


def cache_key(*parts: object) -> str:
    """A stage's Prefect cache key: a hash of its real inputs."""
    return sha256("\x1f".join(str(p) for p in parts))


def shard_loader(cfg: "PipelineConfig") -> str:
    """`ray.loader` resolved: 'parquet' or 'ray-data' (each gives a rank its own rows, so it is part of the run's identity)."""
    if cfg.ray.loader == "auto":
        return "parquet" if cfg.train.cache_shard else "ray-data"
    return cfg.ray.loader


def mirror_tag(cfg: "PipelineConfig") -> tuple[str, ...]:
    """What data.mirror adds to a key (the run's, its evaluation's, its reference's and quick-FID statistics'): nothing
    when off, so the keys of unmirrored data stay as they were."""
    return ("mirror",) if cfg.data.mirror else ()


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (config sections, checksums, versions)."""
    return sha256_json([p.model_dump(mode="json") if isinstance(p, Section) else p for p in parts])[:16]
