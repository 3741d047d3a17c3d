"""Head-to-head promotion through the real `register()` and the real evaluation: a champion trained and evaluated on one
data version (a folder of digit files), challengers evaluated on the next one (the same folder with more files). The gate
measures the champion again on the challenger's yardstick, from its generator as the registry keeps it, and decides on
those two intervals: a clearly better challenger is promoted; a worse one and a noise-level one are not. The re-score is
what the champion's own evaluation on the new data says, is kept on the champion's version and is not computed twice;
every version is measured on the model's yardstick too; data that yardstick cannot measure is refused in one line."""

import json
import math
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest

from gan import checkpoint
from gan.config import Recipe
from gan.data.manifest import read_manifest
from gan.data.sources import load_source
from gan.batches import in_memory_batches
from gan.training_loop import train
from pipelines.cluster.ray import RAY_RUN_RECORD
from pipelines.config import PipelineConfig
from pipelines.registry import champion, head_to_head
from pipelines.stages import register as registry
from pipelines.stages.evaluate import evaluate
from pipelines.stages.ingest import ingest
from tests.registry_store import digit_files
from tests.test_training_loop import Recorder

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

EVAL = {"num_samples": 200, "classifier_epochs": 5, "classifier_augment": False, "fid_draws": 0, "collapse_ratio": 0}
# A small DCGAN of the library's recipe on 8x8 digits: after one epoch FID about 50 on these settings, after ten about 8.
RECIPE = Recipe.model_validate({"model": {"conditional": False, "g_width": 16, "d_width": 32, "z_dim": 32},
                                "train": {"epochs": 10, "batch_size": 64, "checkpoint_every_epochs": 1, "num_sample_images": 16}})
WEAK, GOOD, STRONG = 1, 9, 10  # the epochs of the weak, the good and the strong checkpoint (one epoch more, at a learning rate near 0)


def trained(run_dir: Path) -> list[Path]:
    """RECIPE's checkpoint after each epoch on all 1797 digits, where a Ray Train run named run_dir.name keeps them."""
    source = load_source("bundled-digits")
    sink = Recorder()
    train(RECIPE, (1, 8, 8), 10, in_memory_batches(source.images, source.labels, RECIPE.train.batch_size, seed=0), sink)
    run_dir.mkdir(parents=True)
    (run_dir / RAY_RUN_RECORD).write_text("{}")
    for epoch, state in enumerate(sink.states, 1):
        (run_dir / f"checkpoint_{epoch:06d}").mkdir()
        checkpoint.save(state, run_dir / f"checkpoint_{epoch:06d}")
    return sorted(run_dir.glob("checkpoint_*"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two data versions of one source folder (60 % of the files, then all), a third with five of the ten classes, the
    checkpoints, and every evaluation the cases register."""
    root = tmp_path_factory.mktemp("head-to-head")
    order = np.random.default_rng(0).permutation(1797)
    cfg = PipelineConfig.model_validate({"runtime": {"workdir": str(root / "gan-work")}, "data": {"source": str(root / "source")}, "eval": EVAL})
    digit_files(root / "source", order[:1078])
    first = ingest(cfg)
    digit_files(root / "source", order[1078:])
    second = ingest(cfg)
    five = cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": str(digit_files(root / "five", order, range(5)))})})
    fewer = ingest(five)
    folders = trained(root / "gan-work" / "ray_results" / "train-h2h")
    weak, good, strong = (folders[epoch - 1] for epoch in (WEAK, GOOD, STRONG))
    pairs = [(weak, first), (good, first), (strong, first), (weak, second), (good, second), (strong, second), (good, fewer), (strong, fewer)]
    reports = {(ckpt, data): evaluate(cfg if data != fewer else five, data, str(ckpt)) for ckpt, data in pairs}
    return {"cfg": cfg, "first": first, "second": second, "fewer": fewer, "weak": weak, "good": good, "strong": strong, "reports": reports}


def registered(world: dict, name: str, folder: Path, dataset: str) -> dict:
    """register() of a checkpoint and its evaluation on `dataset`, as model `name`."""
    cfg = world["cfg"].model_copy(update={"registry": world["cfg"].registry.model_copy(update={"model_name": name})})
    return registry.register(cfg, dataset, str(folder), world["reports"][(folder, dataset)])


def store(world: dict) -> mlflow.MlflowClient:
    uri = f"sqlite:///{Path(world['cfg'].runtime.workdir) / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def report(world: dict, folder: Path, dataset: str) -> dict:
    return json.loads(Path(world["reports"][(folder, dataset)]).read_text())


def fingerprint(dataset: str) -> str:
    return read_manifest(Path(dataset))["fingerprint"]


@pytest.fixture()
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The registered generators the gate downloads, by model and version."""
    calls, real = [], head_to_head.registered_generator
    monkeypatch.setattr(head_to_head, "registered_generator", lambda name, version: (calls.append(f"{name} v{version}"), real(name, version))[1])
    return calls


def test_a_clearly_better_challenger_on_new_data_is_promoted_head_to_head(world: dict, downloads: list[str]) -> None:
    assert registered(world, "better", world["weak"], world["first"])["reason"] == "no champion yet"
    promoted = registered(world, "better", world["strong"], world["second"])
    first, second = fingerprint(world["first"]), fingerprint(world["second"])
    assert promoted["champion"] and promoted["reason"].endswith("better beyond the noise"), promoted["reason"]
    assert f"head to head on v2's data {second[:12]} (v1 was trained on {first[:12]})" in promoted["reason"]
    assert downloads == ["better v1"]

    # The champion's score on the new data, measured from its registered generator, is what its own evaluation there says.
    client = store(world)
    yardstick = report(world, world["strong"], world["second"])["yardstick"]
    kept = json.loads(client.get_model_version("better", "1").tags[f"score.{yardstick['key']}"])
    own = report(world, world["weak"], world["second"])["model"]
    assert kept["dataset"] == second  # equal up to float summation order (the evaluations ran on more threads)
    assert (kept["fid"], kept["fid_std"]) == (pytest.approx(own["fid"], rel=1e-6), pytest.approx(own["fid_bootstrap_std"], rel=1e-6))
    assert f"against champion v1's {own['fid']:.2f} ± {1.96 * own['fid_bootstrap_std']:.2f}" in promoted["reason"]

    # The model's yardstick is v1's (its data, its classifier); v2 is measured on it as well, as its own evaluation there says.
    fixed = json.loads(client.get_registered_model("better").tags["yardstick"])
    assert (fixed["version"], fixed["dataset"]) == ("1", first)
    on_first = report(world, world["strong"], world["first"])["model"]
    tags = client.get_model_version("better", "2").tags
    assert float(tags["yardstick_fid"]) == pytest.approx(on_first["fid"], rel=1e-6)
    assert float(tags["yardstick_fid_std"]) == pytest.approx(on_first["fid_bootstrap_std"], rel=1e-6)
    assert float(client.get_model_version("better", "1").tags["yardstick_fid"]) == report(world, world["weak"], world["first"])["model"]["fid"]


def test_a_worse_and_a_noise_level_challenger_are_not_promoted(world: dict, downloads: list[str]) -> None:
    registered(world, "kept", world["good"], world["first"])
    worse = registered(world, "kept", world["weak"], world["second"])
    assert not worse["champion"] and worse["reason"].endswith("not better"), worse["reason"]
    assert "head to head on v2's data" in worse["reason"]
    # One epoch more at the end of the schedule: a change smaller than the noise (here lower, by a tenth of it; which way it
    # goes may differ with the machine's arithmetic, that it is within the noise does not).
    noise = registered(world, "kept", world["strong"], world["second"])
    assert not noise["champion"] and "head to head on v3's data" in noise["reason"], noise["reason"]
    assert re.search(r": (lower by [\d.]+, but within the noise \(± [\d.]+\)|not better)$", noise["reason"]), noise["reason"]
    champion, challenger = (report(world, world[which], world["second"])["model"] for which in ("good", "strong"))
    assert abs(champion["fid"] - challenger["fid"]) < 1.96 * math.hypot(champion["fid_bootstrap_std"], challenger["fid_bootstrap_std"])
    assert downloads == ["kept v1"]  # measured again once on the new data's yardstick, then read from its tag
    client = store(world)
    assert str(client.get_model_version_by_alias("kept", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("kept", "challenger").version) == "3"


def test_data_the_models_yardstick_cannot_measure_is_refused_in_one_line_until_a_person_promotes_it(world: dict) -> None:
    registered(world, "ten", world["strong"], world["first"])
    refused = registered(world, "ten", world["good"], world["fewer"])
    assert not refused["champion"]
    assert refused["reason"] == (
        "v2's data have the classes 5 (0, 1, 2, 3, 4), the yardstick's 10 (0, 1, 2, 3, 4, 5, ...) (the yardstick of ten, fixed by "
        "v1): it cannot be compared with ten's versions; register it under another registry.model_name, or make it champion with "
        "`gan-pipeline promote ten 2`")
    client = store(world)
    assert str(client.get_model_version_by_alias("ten", "champion").version) == "1"
    assert client.get_model_version("ten", "2").tags["promotion"] == refused["reason"]

    # A person makes it champion: its yardstick becomes the model's, and the next version on that data meets the gate again.
    said = champion.promote(world["cfg"], "ten", "2", "five classes from now on")
    assert said == "ten: champion v2 (was v1); ten's yardstick is now v2's (its data cannot be measured on the one before)"
    assert json.loads(client.get_registered_model("ten").tags["yardstick"])["version"] == "2"
    decided = registered(world, "ten", world["strong"], world["fewer"])
    assert not decided["reason"].startswith("v3's data") and "against champion v2's" in decided["reason"], decided["reason"]
