"""Warm starts: what the library takes from a parent and what it starts again, exactly resumable; `train.init_from` resolved
against a real registry (a version registered through `register()`, its training state downloaded from its run) or a
checkpoint folder, and every reference that cannot serve refused in one line naming what differs; the run's identity."""

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import torch

from gan import checkpoint
from gan.config import ConfigError, TrainConfig, warm_started
from gan.latent import Latent
from gan.state import build_state, warm_start
from gan.batches import in_memory_batches
from gan.training_loop import train
from pipelines.config import PipelineConfig, load_config
from pipelines.registry import warm_start as resolution
from pipelines.registry.warm_start import Parent, resolve, state_file
from pipelines.stages.ingest import ingest
from pipelines.stages.train import run_name, training_key
from tests.registry_store import checkpoints, config, registered
from tests.test_training_loop import SHAPE, Interrupted, Recorder, assert_same_tensors, digits, recipe, run

pytestmark = pytest.mark.usefixtures("one_thread")


def warm_run(r, parent: dict, resume: dict | None = None, sink: Recorder | None = None, quick_fid=None) -> Recorder:  # noqa: ANN001
    sink = sink or Recorder()
    try:
        train(r, SHAPE, 10, in_memory_batches(*digits(), r.train.batch_size, seed=0), sink, resume=resume, init=parent, quick_fid=quick_fid)
    except Interrupted:
        pass
    return sink


def test_a_warm_start_takes_the_networks_and_optionally_the_optimisers_and_starts_every_counter_afresh() -> None:
    parent = run(recipe(train=dict(epochs=2))).states[-1]
    child = recipe(optim=dict(lr_g=5e-5, weight_decay_d=0.01))  # its own learning rate and weight decay
    for optimisers in (False, True):
        s = build_state(child, SHAPE, Latent.of(child.model, 10), torch.device("cpu"))
        warm_start(s, parent, optimisers)
        for name in ("G", "D", "G_ema"):
            assert_same_tensors(getattr(s, name).state_dict(), parent[name], name)
        assert (s.step, s.epoch, s.train_seconds, s.schedule_steps, s.history, s.events, s.lr_scale) == (0, 0, 0.0, 0, [], [], 1.0)
        moments = s.opt_G.state_dict()["state"]
        if optimisers:
            for i, state in parent["opt_G"]["state"].items():
                assert_same_tensors(moments[i], state, f"opt_G[{i}]")
        else:
            assert moments == {}
        # The settings stay the child's: a parent's learning rate or weight decay never comes along.
        assert s.opt_G.param_groups[0]["lr"] == 5e-5 and s.opt_D.param_groups[0]["weight_decay"] == 0.01


def test_a_warm_started_run_counts_from_zero_measures_its_parent_first_and_resumes_exactly(tmp_path: Path) -> None:
    parent = run(recipe(train=dict(epochs=2))).states[-1]
    r = recipe(train=dict(epochs=2, checkpoint_every_epochs=1, fid_every_epochs=1, init_from="parent", init_optimizer=True))

    def quick_fid(G: torch.nn.Module, latent: Latent) -> float:
        return float(sum(p.abs().sum() for p in G.parameters()))  # a number of the weights measured
    quick_fid.key = "k"

    straight = warm_run(r, parent, quick_fid=quick_fid).states[-1]
    assert straight["step"] == 32 and straight["epoch"] == 2  # counted from zero, not from the parent's 32
    assert (parent["ema_g_steps"], straight["ema_g_steps"]) == (32, 64)  # the EMA's horizon goes on from the parent's
    snapshots = checkpoint.snapshots_of(straight)
    assert [(q["epoch"], q["step"], q["seconds"]) for q in snapshots[:1]] == [(0, 0, 0.0)]  # the parent's quality, at 0 s
    G = build_state(r, SHAPE, Latent.of(r.model, 10), torch.device("cpu")).G_ema
    G.load_state_dict(parent["G_ema"])
    assert snapshots[0]["fid"] == quick_fid(G, None) and len(snapshots) == 3  # the parent's EMA generator, then each epoch's

    # Killed after epoch 1 and resumed from its own checkpoint (the parent handed in again, as the worker does): the very
    # weights of the uninterrupted warm run.
    checkpoint.save(warm_run(r, parent, sink=Recorder(stop_after=1), quick_fid=quick_fid).states[-1], tmp_path)
    resumed = warm_run(r, parent, resume=checkpoint.load(tmp_path), quick_fid=quick_fid).states[-1]
    for key in ("G", "D", "G_ema"):
        assert_same_tensors(straight[key], resumed[key], key)
    assert [(q["step"], q["fid"]) for q in checkpoint.snapshots_of(resumed)] == [(q["step"], q["fid"]) for q in snapshots]


def test_warm_start_settings() -> None:
    assert warm_started(TrainConfig(epochs=58, max_minutes=7.5, init_from="@champion", init_budget=0.33)).model_dump(
        include={"epochs", "max_minutes"}) == {"epochs": 20, "max_minutes": pytest.approx(2.475)}
    for ok in ("", "@champion", "models:/m@champion", "models:/m/3", "/some/checkpoint"):
        load_config(None, [f"train.init_from={ok!r}"])
    with pytest.raises(ConfigError, match=r"train.init_from = 'models:/m' \(--set\): Value error, expected models:/NAME@ALIAS"):
        load_config(None, ["train.init_from=models:/m"])
    with pytest.raises(ConfigError, match=r"train.init_budget = 0.5 acts only with a warm start \(train.init_from\)"):
        load_config(None, ["train.init_budget=0.5"])


def with_init(cfg: PipelineConfig, ref: str, **train: object) -> PipelineConfig:
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"init_from": ref, **train})})


@pytest.fixture()
def parent_registered(client: mlflow.MlflowClient, tmp_path: Path) -> dict:
    """Model `m` with v1 champion, registered through register() from a tiny MLP checkpoint on 8x8 digits; the config whose
    networks are that checkpoint's."""
    folders = checkpoints(tmp_path / "gan-work" / "ray_results" / "train-test", epochs=2)
    state = checkpoint.load(folders[0])
    base = config(tmp_path)
    cfg = base.model_copy(update={"model": type(base.model).model_validate(checkpoint.config_of(state)["model"])})
    dataset = ingest(cfg)
    registered(cfg, dataset, folders[0], 50.0)
    return {"cfg": cfg, "dataset": dataset, "folders": folders, "state": state}


@pytest.mark.integration
def test_init_from_a_registered_version_or_a_folder(parent_registered: dict, client: mlflow.MlflowClient, tmp_path: Path) -> None:
    cfg, folders = parent_registered["cfg"], parent_registered["folders"]
    version = client.get_model_version("m", "1")
    parent = resolve(with_init(cfg, "models:/m@champion"), SHAPE, 10)
    assert parent == Parent("models:/m@champion", checkpoint.digest(folders[0]), 16, "m/1", version.run_id,
                            version.tags["dataset_fingerprint"])
    # Downloaded from the version's run, byte for byte the checkpoint that was registered.
    kept = tmp_path / "gan-work" / "warm-starts" / version.run_id / checkpoint.STATE_FILE
    assert kept.read_bytes() == (folders[0] / checkpoint.STATE_FILE).read_bytes()
    assert resolve(with_init(cfg, "@champion"), SHAPE, 10) == Parent(**{**parent.as_dict(), "source": "models:/m@champion"})
    assert resolve(with_init(cfg, "models:/m/1"), SHAPE, 10).digest == parent.digest
    from_folder = resolve(with_init(cfg, str(folders[1])), SHAPE, 10)
    assert (from_folder.folder, from_folder.step, from_folder.version) == (str(folders[1]), 32, None)

    # A run's identity: its data, its training and its parent; how the parent was named does not count.
    manifest = json.loads((Path(parent_registered["dataset"]) / "manifest.json").read_text())
    names = {run_name(cfg, manifest), run_name(cfg, manifest, parent.as_dict()), run_name(cfg, manifest, from_folder.as_dict())}
    assert len(names) == 3
    assert run_name(with_init(cfg, "@champion", init_missing="cold"), manifest) == run_name(cfg, manifest)

    # A champion already trained on this very data with this training is no new work: its own parent (here none) is taken.
    assert resolve(with_init(cfg, "@champion"), SHAPE, 10, manifest["fingerprint"], "another training") == parent
    client.set_model_version_tag("m", "1", "training_key", training_key(with_init(cfg, "@champion")))
    assert resolve(with_init(cfg, "@champion"), SHAPE, 10, manifest["fingerprint"], training_key(with_init(cfg, "@champion"))) is None


@pytest.mark.integration
def test_references_that_cannot_serve_are_refused_in_one_line(parent_registered: dict, client: mlflow.MlflowClient, tmp_path: Path) -> None:
    cfg = parent_registered["cfg"]

    def refused(ref: str, message: str, shape: tuple = SHAPE, classes: int = 10, **changes: object) -> None:
        with pytest.raises(ConfigError, match=message) as err:
            resolve(with_init(cfg, ref, **changes.pop("train", {})).model_copy(update=changes), shape, classes)
        assert str(err.value).startswith(f"config error: train.init_from = {ref!r}: ") and "\n" not in str(err.value)

    refused("@best", r"m: no version 'best'; registered versions: v1; aliases: challenger = v1, champion = v1; train.init_missing 'cold'")
    assert resolve(with_init(cfg, "@best", init_missing="cold"), SHAPE) is None  # the first run of a schedule
    assert resolve(with_init(cfg, "models:/n@champion", init_missing="cold"), SHAPE) is None  # no such model yet either
    refused("models:/m/7", r"m: no version '7'", train={"init_missing": "cold"})  # a version number is never a first run
    refused("@champion", r"m v1 was trained on \(1, 8, 8\) images; this data is \(1, 28, 28\)", shape=(1, 28, 28))
    wider = cfg.model.model_copy(update={"g_hidden": [64]})
    refused("@champion", r"m v1 has other networks: model.g_hidden \[32\] \(this run: \[64\]\); a warm start needs the same", model=wider)
    conditional = cfg.model.model_copy(update={"conditional": True})
    refused("@champion", r"m v1 has other networks: model.conditional False \(this run: True\)", model=conditional)
    refused(str(tmp_path / "nowhere"), r"no such folder .*nowhere; expected models:/NAME@ALIAS, models:/NAME/VERSION, @ALIAS or a checkpoint")
    refused(str(tmp_path), r"holds no state.pt; expected a training checkpoint folder")

    client.create_model_version("m", source="file:///elsewhere", tags={"checkpoint": "/old/checkpoint"})  # v2, registered by hand
    refused("models:/m/2", r"m v2 keeps no training state with its run \(registered before warm starts were\); its checkpoint folder "
                           r"was /old/checkpoint: name that instead")
    # A downloaded state that is not what the version recorded is not used.
    kept = next((tmp_path / "gan-work" / "warm-starts").glob(f"*/{checkpoint.STATE_FILE}"))
    torch.save({"format_version": checkpoint.FORMAT_VERSION}, kept)
    refused("@champion", r"state.pt does not hash to the \w{12} that m v1 recorded; delete .* to download it again")
    shutil.rmtree(kept.parent)
    assert resolve(with_init(cfg, "@champion"), SHAPE, 10).step == 16  # downloaded again
    adam_only = cfg.optim.model_copy(update={"optimizer": "rmsprop"})
    refused("@champion", r"m v1 trained with optim.optimizer 'adam' \(this run: 'rmsprop'\): its optimiser state cannot serve",
            train={"init_optimizer": True}, optim=adam_only)
    assert resolve(with_init(cfg, "@champion").model_copy(update={"optim": adam_only}), SHAPE, 10).version == "m/1"  # fresh ones: fine

    # A folder that changed since the run was named after it is not trained from.
    folder = tmp_path / "parent"
    shutil.copytree(parent_registered["folders"][0], folder)
    named = resolve(with_init(cfg, str(folder)), SHAPE, 10)
    checkpoint.save(checkpoint.load(parent_registered["folders"][1]), folder)
    with pytest.raises(ConfigError, match="does not hash to the .* it changed since; name it again"):
        state_file(with_init(cfg, str(folder)), named)


@pytest.mark.integration
def test_a_champion_registered_before_training_states_were_kept(parent_registered: dict, client: mlflow.MlflowClient) -> None:
    """Its checkpoint folder serves when it is still here; else an alias follows train.init_missing; a registry that does
    not answer is not taken for a missing parent (the task's retry may reach it)."""
    cfg, folders = parent_registered["cfg"], parent_registered["folders"]
    old = client.create_model_version("m", source="file:///elsewhere", tags={"checkpoint": str(folders[1]), "dataset_fingerprint": "d"})
    client.set_registered_model_alias("m", "legacy", old.version)
    parent = resolve(with_init(cfg, "@legacy"), SHAPE, 10)
    assert (parent.version, parent.folder, parent.digest, parent.dataset) == ("m/2", str(folders[1]), checkpoint.digest(folders[1]), "d")
    shutil.rmtree(folders[1])
    assert resolve(with_init(cfg, "@legacy", init_missing="cold"), SHAPE, 10) is None
    with pytest.raises(ConfigError, match="m v2 keeps no training state with its run .* and its checkpoint folder .* is not here"):
        resolve(with_init(cfg, "@legacy"), SHAPE, 10)

    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    shutil.rmtree(Path(cfg.runtime.workdir) / "warm-starts", ignore_errors=True)  # nothing downloaded yet: the registry is asked
    unreachable = MlflowException("API request to http://mlflow:5000 failed: Connection refused")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resolution, "download_once", lambda *_: (_ for _ in ()).throw(unreachable))
        with pytest.raises(MlflowException, match="Connection refused"):
            resolve(with_init(cfg, "@champion"), SHAPE, 10)


@pytest.mark.integration
def test_register_keeps_the_full_training_state_and_names_the_parent(parent_registered: dict, client: mlflow.MlflowClient) -> None:
    """A version warm-started from v1 (its checkpoint's lineage says so) is tagged with its parent, and warm starts from it
    work in turn; the state it keeps is the full one (networks, optimisers, counters)."""
    cfg, folders = parent_registered["cfg"], parent_registered["folders"]
    parent = resolve(with_init(cfg, "@champion"), SHAPE, 10)
    (folders[1] / checkpoint.LINEAGE_FILE).write_text(json.dumps({"training_key": "k", "warm_start": parent.as_dict()}))
    registered(cfg, parent_registered["dataset"], folders[1], 40.0)
    v2 = client.get_model_version("m", "2")
    assert v2.tags["parent_version"] == "m v1" and json.loads(v2.tags["warm_start"]) == parent.as_dict()
    assert v2.tags["training_key"] == "k" and v2.tags["training_state_sha256"] == checkpoint.digest(folders[1])
    child = resolve(with_init(cfg, "models:/m/2"), SHAPE, 10)
    kept = Path(cfg.runtime.workdir) / "warm-starts" / child.run_id
    assert (kept / checkpoint.STATE_FILE).read_bytes() == (folders[1] / checkpoint.STATE_FILE).read_bytes()
    assert checkpoint.load(kept)["step"] == child.step == 32  # complete: it loads as a checkpoint (optimisers, counters, RNG)
