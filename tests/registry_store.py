"""A real registry for tests: a SQLite MLflow store in the test's workspace (the `client` fixture in conftest.py), a real
dataset, tiny real checkpoints laid out as a Ray Train run keeps them, and evaluation reports, registered through `register()`."""

import json
from pathlib import Path

from PIL import Image

from gan import checkpoint
from gan.data.sources import load_source
from pipelines.cluster.ray import RAY_RUN_RECORD
from pipelines.config import PipelineConfig
from pipelines.stages.register import register
from tests.test_training_loop import recipe, run


def digit_files(folder: Path, rows: object, classes: object = range(10)) -> Path:
    """scikit-learn's 8x8 digits of `rows` (of 1797) as PNG files in one folder per class, as a user's source folder holds
    them; only those of `classes`."""
    source = load_source("bundled-digits")
    for i in rows:
        label = int(source.labels[i])
        if label in classes:
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(source.images[i, 0]).save(folder / str(label) / f"{int(i):04d}.png")
    return folder


def config(tmp_path: Path, **data: object) -> PipelineConfig:
    """Model `m` in the workspace tmp_path/gan-work (the `client` fixture's store), on scikit-learn's 8x8 digits."""
    return PipelineConfig.model_validate({"runtime": {"workdir": str(tmp_path / "gan-work")}, "registry": {"model_name": "m"},
                                          "data": {"source": "bundled-digits", **data}})


def evaluation(fid: float, std: float = 0.1, extractor: str = "clf-a", n: int = 1000, memorised: float = 0.01) -> dict:
    """The parts of an evaluation report that the gate and `register` read."""
    return {"model": {"fid": fid, "fid_bootstrap_std": std}, "real_vs_real": {"fid": 1.0, "fid_bootstrap_std": 0.05},
            "feature_extractor": extractor, "num_images": n, "memorisation": {"pixels": {"memorised_share": memorised}},
            "classifier_test_accuracy": 0.9, "collapsed": None}


def checkpoints(run_dir: Path, epochs: int, **model: object) -> list[Path]:
    """A tiny MLP GAN's checkpoints after each of `epochs` epochs, where a Ray Train run named run_dir.name keeps them:
    run_dir/checkpoint_<n>/, beside the run's record. `model` overrides model keys (e.g. conditional=True)."""
    run_dir.mkdir(parents=True)
    (run_dir / RAY_RUN_RECORD).write_text("{}")
    folders = []
    tiny = recipe(model=dict(arch="mlp", **model), train=dict(epochs=epochs, checkpoint_every_epochs=1))
    for epoch, state in enumerate(run(tiny).states, 1):
        folders.append(run_dir / f"checkpoint_{epoch:06d}")
        folders[-1].mkdir()
        checkpoint.save(state, folders[-1])
    return folders


def registered(cfg: PipelineConfig, dataset: str, folder: Path, fid: float, std: float = 0.5) -> dict:
    """`register()` of a checkpoint with an evaluation report of this FID (written into the checkpoint's folder)."""
    report = folder / "evaluation" / "report.json"
    report.parent.mkdir(exist_ok=True)
    report.write_text(json.dumps(evaluation(fid, std)))
    return register(cfg, dataset, str(folder), str(report))
