"""The pipeline's resolved config: the library's sections plus Ray, registry and workspace settings.

Defaults live in the models below; YAML files and `--set section.key=value` only override them.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from gan.config import ConfigError, DataConfig, EvalConfig, ModelConfig, Section, TrainConfig


class RayConfig(Section):
    num_workers: int = Field(2, ge=1, le=4096, description="Ray Train workers (DDP ranks)")
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL instead of gloo")
    cpus_per_worker: float = Field(
        0.5, gt=0, le=256, description="CPUs reserved per worker; leave some free for Ray Data on small machines"
    )
    max_failures: int = Field(1, ge=-1, description="worker-group restarts within one fit (-1: unlimited)")


class RegistryConfig(Section):
    model_name: str = Field("mnist-gan", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="registered model name")
    experiment: str = Field("gan-pipeline", min_length=1, description="MLflow experiment name")
    promote_metric: str = Field("fid", pattern=r"^fid$", description="lower is better; champion moves only on improvement")


class RuntimeConfig(Section):
    workdir: str = Field("gan-work", min_length=1, description="folder (relative to the current one) for datasets, checkpoints, stores")


class PipelineConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> PipelineConfig:
    """Defaults, then the YAML file, then each `section.key=value` override, validated once at the end."""
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}".replace("\n", " ")) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections, got {type(loaded).__name__}")
        raw = loaded or {}
    for item in overrides:
        _apply_override(raw, item)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, origin, overrides)) from None


def _apply_override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.epochs=5")
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
    given = [o.split("=", 1)[0].strip() for o in overrides]
    source = "--set" if any(g == key or g.startswith(key + ".") for g in given) else origin
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"config error: {key} = {value!r} ({source}): {what}{more}"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (config sections, checksums, versions)."""
    text = json.dumps([p.model_dump(mode="json") if isinstance(p, Section) else p for p in parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
