"""The registered generator served: its named inputs (the MLflow signature of `served_model.py`), loaded back in this
process, grids of its samples, and MLflow's scoring server for it."""

import os
import sys
from pathlib import Path

import numpy as np

from gan import sampling
from gan.data.errors import DataError
from gan.latent import Latent
from pipelines.config import PipelineConfig
from pipelines.errors import UsageError
from pipelines.registry.client import connect
from pipelines.workspace import Workspace, tracking_uri

MODEL_CODE = Path(__file__).with_name("served_model.py")  # the pyfunc model from code that every version carries


def input_schema(latent: Latent) -> "Schema":  # noqa: F821
    """The served model's named inputs: z, plus label (conditional) or code / code_continuous (InfoGAN)."""
    from mlflow.types import Schema, TensorSpec  # noqa: PLC0415

    specs = [TensorSpec(np.dtype(np.float32), (-1, latent.z_dim), "z")]
    if latent.num_classes:
        specs.append(TensorSpec(np.dtype(np.int64), (-1,), "label"))
    if latent.info_categorical:
        specs.append(TensorSpec(np.dtype(np.int64), (-1,), "code"))
    if latent.info_continuous:
        specs.append(TensorSpec(np.dtype(np.float32), (-1, latent.info_continuous), "code_continuous"))
    return Schema(specs)


def load_served(cfg: PipelineConfig, model_uri: str) -> tuple["mlflow.pyfunc.PyFuncModel", Latent]:  # noqa: F821
    """A registered generator by URI (e.g. models:/NAME@champion), in this process, and its latent layout."""
    import mlflow  # noqa: PLC0415
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    connect(cfg)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as err:
        raise DataError(f"--model {model_uri}: cannot load it from {tracking_uri(Workspace.of(cfg.runtime.workdir))}: {err.message}") from None
    layout = (model.metadata.metadata or {}).get("latent")
    latent = Latent(**layout) if layout else Latent(model.metadata.get_input_schema().inputs[0].shape[1])
    return model, latent


def sample_grid(cfg: PipelineConfig, model_uri: str, n: int, out: Path, seed: int, label: int | None = None, per_class: bool = False) -> str:
    """Save samples of a registered generator as a grid: n random ones (all of class `label` if given), or with
    `per_class` one row per class (conditional) or the InfoGAN code figure (rows: categorical code, columns: a continuous code)."""
    from gan.images import save_grid  # noqa: PLC0415

    model, latent = load_served(cfg, model_uri)
    if label is not None and not latent.num_classes:
        raise UsageError(f"--label {label}: {model_uri} is not a conditional model; it takes no label")
    if label is not None and not 0 <= label < latent.num_classes:
        raise UsageError(f"--label {label}: {model_uri} knows classes 0..{latent.num_classes - 1}")
    nrow = 8
    if per_class and latent.info_categorical and latent.info_continuous:
        inputs, nrow = sampling.code_sweep_inputs(latent, 10, seed), 10
    elif per_class and (latent.num_classes or latent.info_categorical):
        inputs, nrow = sampling.per_class_inputs(latent, 10, seed), 10
    elif per_class:
        raise UsageError(f"--per-class: {model_uri} is unconditional and has no categorical code; there are no classes to lay out")
    else:
        inputs = sampling.random_inputs(latent, n, seed, label=label)
    images = model.predict(inputs.as_dict())  # [n, C, H, W] in [0, 1]
    return str(save_grid(images, out, nrow=nrow))


def scoring_server(cfg: PipelineConfig, model_uri: str, host: str, port: int, workers: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment of `mlflow models serve` for a registered generator, once the registry knows it.

    Run as written from a fresh clone, with no virtualenv activated: the server starts `uvicorn` from PATH as a child
    (without it: "Return code = 127"), so this interpreter's bin folder goes first on PATH; `--env-manager local` serves
    in this environment (MLflow's default builds a fresh one from PyPI); the store is the working folder's."""
    import mlflow  # noqa: PLC0415
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    connect(cfg)
    uri = tracking_uri(Workspace.of(cfg.runtime.workdir))
    try:
        mlflow.models.get_model_info(model_uri)
    except MlflowException as err:
        raise DataError(f"--model {model_uri}: not found in {uri}: {err.message}") from None
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
               "--host", host, "--port", str(port), "--workers", str(workers)]
    return command, env
