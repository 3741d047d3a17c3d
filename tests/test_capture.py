"""The GPU step, checked on CPU: a captured step (static buffers, draws made before the step, learning rates as tensors,
gradients zeroed in place) trains bit for bit as the eager one; what only CUDA runs is checked by its arguments (the CUDA
graph's capture and replay, what 'auto' becomes on a CUDA device, what capture refuses); the GPU batch's learning-rate
rule; and the GPU check script's dry run, without Ray, Prefect, MLflow or the pipelines."""

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from gan import capture, optim
from gan.config import ConfigError, Recipe, batch_lr_factor, check_recipe, device_batch
from gan.device import device_settings, for_device
from tests.test_training_loop import Recorder, assert_same_tensors, recipe, run

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
CUDA, CPU = torch.device("cuda"), torch.device("cpu")
# Recipes whose steps differ in what a graph holds: phases every k steps, penalties with inner gradients, draws from the
# latent generator (wgan-gp's weights), clipping after the step, RMSprop, augmentation and dropout, bf16 autocast.
CAPTURED = {
    "hinge-sn-conditional": dict(model=dict(spectral_norm=True, conditional=True), train=dict(loss="hinge")),
    "wgan-gp-n_critic": dict(train=dict(loss="wgan-gp", n_critic=2)),
    "lazy-r1-augment": dict(train=dict(n_critic=2), reg=dict(r1_gamma=1.0, r1_every=3, diffaugment="translation,cutout"),
                            model=dict(d_dropout=0.2), optim=dict(clip_grad_d=1.0, l1_g=1e-4, weight_decay_d=1e-4, schedule="linear", decay_start=0.0)),
    "wgan-rmsprop": dict(train=dict(loss="wgan"), optim=dict(optimizer="rmsprop", beta1=0.0)),
    "infogan-bf16": dict(model=dict(info_categorical=4, info_continuous=2), train=dict(precision="bf16", channels_last=True), reg=dict(feature_matching=0.5)),
}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the phases `capture.record` recorded, in order."""
    calls, original = [], capture.record

    def counting(body, inputs, stream):  # noqa: ANN001, ANN202
        calls.append(sorted(inputs))
        return original(body, inputs, stream)

    monkeypatch.setattr(capture, "record", counting)
    return calls


def same_run(a: dict, b: dict) -> None:
    """Two final checkpoint states: networks, optimiser moments and logged stats bit for bit."""
    for key in ("G", "D", "G_ema"):
        assert_same_tensors(a[key], b[key], key)
    for key in ("opt_G", "opt_D"):
        for i, param_state in a[key]["state"].items():
            assert_same_tensors(param_state, b[key]["state"][i], f"{key}[{i}]")
    assert a["history_json"] == b["history_json"]


@pytest.mark.parametrize("sections", CAPTURED.values(), ids=CAPTURED.keys())
def test_a_captured_run_equals_the_eager_run_bit_for_bit(sections: dict, recorded: list) -> None:
    """On a CPU, capture runs the recorded step on its static buffers (no graph): every phase is captured after its
    warm-up and replayed, and two epochs end with the eager run's weights, moments and logged stats."""
    eager = run(recipe(**{**sections, "train": {**sections.get("train", {}), "capture": False}})).states[-1]
    assert recorded == []
    captured = run(recipe(**{**sections, "train": {**sections.get("train", {}), "capture": True}})).states[-1]
    phases = 2 + bool(sections.get("reg", {}).get("r1_gamma"))
    assert len(recorded) == phases, recorded  # D, G (and Dreg): each captured once, then replayed
    same_run(eager, captured)


def test_a_rollback_under_capture_captures_again_and_equals_the_eager_run(recorded: list) -> None:
    """The NaN drill: the rollback replaces the optimisers' state tensors, so the phases are captured afresh."""
    r = dict(train=dict(epochs=3, checkpoint_every_epochs=1))
    eager = run(recipe(train={**r["train"], "capture": False}), nan_at_step=16 + 5).states[-1]
    captured = run(recipe(train={**r["train"], "capture": True}), nan_at_step=16 + 5).states[-1]
    assert json.loads(captured["events_json"])[0]["kind"] == "rollback" and len(recorded) == 2 * 2
    same_run(eager, captured)


def test_the_checkpoint_keeps_the_config_given_and_says_what_the_device_made_of_it() -> None:
    r = recipe(train=dict(epochs=1))
    assert r.train.precision == "auto" and r.train.channels_last == "auto" and r.train.capture is False
    state = run(r).states[-1]
    assert Recipe.model_validate(json.loads(state["config_json"])) == r  # 'auto' kept: the run's identity is the machine's none
    assert json.loads(state["device_json"]) == {"device": "cpu", "precision": "fp32", "channels_last": False, "capture": False,
                                                 "fused_optimizer": False, "batch_size": 32, "lr_g": 2e-4, "lr_d": 1e-3}


def test_auto_is_what_cpu_runs_were_and_bf16_channels_last_and_capture_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Recipe().train.capture is False  # opt-in until measured on a GPU
    r = Recipe(train=dict(capture="auto"))
    on_cpu = for_device(r, CPU)
    assert (on_cpu.train.precision, on_cpu.train.channels_last, on_cpu.train.capture) == ("fp32", False, False)
    assert on_cpu.model_copy(update={"train": r.train}) == r and on_cpu.train.batch_size == r.train.batch_size
    assert for_device(Recipe(), CUDA).train.capture is False  # the default: eager on a GPU too
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    on_gpu = for_device(r, CUDA)
    assert (on_gpu.train.precision, on_gpu.train.channels_last, on_gpu.train.capture) == ("bf16", True, True)
    assert device_settings(on_gpu, CUDA)["fused_optimizer"] and for_device(on_gpu, CUDA) == on_gpu  # resolved once for all
    assert for_device(Recipe(model=dict(arch="mlp")), CUDA).train.channels_last is False  # conv nets only
    explicit = Recipe(train=dict(precision="fp32", channels_last=False, capture=False))
    assert for_device(explicit, CUDA).train == explicit.train  # only 'auto' depends on the device
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert for_device(r, CUDA).train.precision == "fp32"  # a GPU without bf16


@pytest.mark.parametrize(
    ("sections", "world_size", "reason"),
    [
        (dict(train=dict(precision="fp16")), 1, "train.precision 'fp16': its loss scaler decides on the host"),
        (dict(reg=dict(instance_noise=0.1)), 1, "reg.instance_noise: its level, annealed at every step"),
        ({}, 2, "2 DDP workers: DDP's gradient all-reduce is not captured here"),
    ],
)
def test_capture_is_refused_where_a_graph_cannot_hold_the_step(sections: dict, world_size: int, reason: str) -> None:
    """'auto' leaves such a run eager; `true` is a one-line config error naming why, at load where the recipe shows it."""
    auto = Recipe.model_validate({**sections, "train": {**sections.get("train", {}), "capture": "auto"}})
    assert for_device(auto, CUDA, world_size).train.capture is False
    forced = Recipe.model_validate({**sections, "train": {**sections.get("train", {}), "capture": True}})
    with pytest.raises(ConfigError, match=f"^config error: train.capture = true cannot capture this run's step: {reason}.*; use 'auto' or false$"):
        for_device(forced, CUDA, world_size)
    if world_size == 1:
        with pytest.raises(ConfigError, match="train.capture = true cannot capture this recipe's step"):
            check_recipe(forced)


def test_the_pipeline_refuses_capture_over_several_workers() -> None:
    from pipelines.config import load_config  # noqa: PLC0415

    with pytest.raises(ConfigError, match="2 DDP workers"):
        load_config(None, ["train.capture=true", "ray.num_workers=2"])
    assert load_config(None, ["train.capture=true", "ray.num_workers=1"]).train.capture is True


def test_the_gpu_batch_scales_the_learning_rates_by_the_square_root_rule() -> None:
    r = Recipe(train=dict(batch_size=64, gpu_batch_size=1024), optim=dict(lr_g=4e-4, lr_d=8e-4))
    assert device_batch(r.train, cuda=True) == 1024 and batch_lr_factor(r.train, cuda=True) == 4.0
    assert device_batch(r.train, cuda=False) == 64 and batch_lr_factor(r.train, cuda=False) == 1.0
    on_gpu = for_device(r, CUDA)
    assert (on_gpu.train.batch_size, on_gpu.train.gpu_batch_size) == (1024, 0)
    assert on_gpu.optim.lr_g == pytest.approx(16e-4) and on_gpu.optim.lr_d == pytest.approx(32e-4)
    assert for_device(on_gpu, CUDA) == on_gpu and for_device(r, CPU).optim == r.optim
    assert for_device(Recipe(train=dict(batch_size=64)), CUDA).train.batch_size == 64  # 0: the batch kept
    from pipelines.config import PipelineConfig  # noqa: PLC0415

    cfg = PipelineConfig.model_validate({"train": {"gpu_batch_size": 256}, "ray": {"use_gpu": True}})
    assert cfg.worker_batch == 256 and PipelineConfig.model_validate({"train": {"gpu_batch_size": 256}}).worker_batch == 64


def test_the_learning_rate_of_a_captured_step_is_a_tensor_filled_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU a float64 tensor (exact); on CUDA a float32 one on the device, which the fused kernels read, with
    `capturable` on; without capture a float again."""
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    optim.capture_ready(opt, CPU, True)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dtype == torch.float64 and not opt.param_groups[0]["capturable"]
    optim.set_lr(opt, 2e-3)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == 2e-3
    optim.capture_ready(opt, CPU, False)
    assert opt.param_groups[0]["lr"] == 2e-3 and isinstance(opt.param_groups[0]["lr"], float)
    made = []
    monkeypatch.setattr(torch, "tensor", lambda value, dtype, device: made.append((value, dtype, device)) or torch.zeros((), dtype=dtype))
    optim.capture_ready(opt, CUDA, True)
    assert made == [(2e-3, torch.float32, CUDA)] and opt.param_groups[0]["capturable"]


class FakeGraph:
    """Stands in for torch.cuda.CUDAGraph: counts replays."""

    def __init__(self) -> None:
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1


def test_on_cuda_the_step_is_captured_once_in_a_graph_and_replayed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`record` with a stream: the body runs once, inside `torch.cuda.graph(graph, stream=...)`; each replay is the
    graph's, returning the tensors the capture produced."""
    graphs, events, stream = [], [], object()

    @contextmanager
    def capturing(graph: FakeGraph, stream: object) -> None:
        events.append(("capture", graph, stream))
        yield
        events.append("end")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: graphs.append(FakeGraph()) or graphs[-1])
    monkeypatch.setattr(torch.cuda, "graph", capturing)
    out = {"loss": torch.zeros(())}
    replay = capture.record(lambda inputs: events.append("body") or out, {"x": torch.ones(1)}, stream)
    assert events == [("capture", graphs[0], stream), "body", "end"]
    assert replay() is out and replay() is out and graphs[0].replays == 2 and events[-1] == "end"


def test_step_graphs_warm_up_then_capture_then_replay_on_static_buffers() -> None:
    """Eager for the first WARMUP calls, captured at the next, replayed after with the inputs copied into the same
    buffers; inputs of another shape run eagerly; `reset` captures again; the stats returned are copies."""
    seen = []

    def body(inputs: dict) -> dict:
        seen.append(inputs)
        return {"sum": inputs["x"].sum()}

    graphs = capture.StepGraphs(CPU)
    for step in range(capture.WARMUP + 3):
        out = graphs.run("D", body, {"x": torch.full((2,), float(step))})
        assert float(out["sum"]) == 2 * step
    static = seen[capture.WARMUP]
    assert all(inputs is static for inputs in seen[capture.WARMUP:])  # the buffers the graph reads
    assert all(inputs is not static for inputs in seen[: capture.WARMUP])
    graphs.run("D", body, {"x": torch.ones(3)})
    assert seen[-1] is not static and seen[-1]["x"].shape == (3,)  # another shape: eager
    graphs.reset()
    for _ in range(capture.WARMUP + 1):
        graphs.run("D", body, {"x": torch.ones(2)})
    assert seen[-1] is not static  # captured afresh, on new buffers


def test_the_gpu_check_runs_dry_on_cpu_without_ray_prefect_mlflow_or_the_pipelines(tmp_path: Path) -> None:
    """infra/local/gpu-check's script in its dry mode (tiny sizes, a couple of steps, the same code paths), in a fresh
    process where importing ray, prefect, mlflow, yaml or anything in pipelines/ fails, as on the GPU machine."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'ray', 'prefect', 'mlflow', 'pipelines', 'yaml'}:\n"
        "            raise ImportError(f'{name} is not on the GPU machine')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "benchmarks" / "gpu_check.py"), "--dry-run"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    presets = sorted(p.stem for p in (ROOT / "conf" / "presets").glob("*.yaml"))
    assert all(f"PASS  preset {name}" in out for name in presets), out
    assert "PASS  distributed" in out and "FAIL" not in out and "PASS  capture == eager" in out
    for mode in ("fp32 eager", "bf16 + channels_last", "bf16 + channels_last + capture"):
        assert out.count(f"  {mode:<32}") == 3, out  # the default model at two batches, DCGAN-64
    assert "dry run" in out


def test_the_gpu_checks_preset_reader_reads_every_preset_as_yaml_does() -> None:
    """The GPU machine has no PyYAML: the check reads conf/presets/ with a reader of the presets' own subset of YAML."""
    import yaml  # noqa: PLC0415

    sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
    try:
        from gpu_check import read_preset  # noqa: PLC0415
    finally:
        sys.path.remove(str(ROOT / "tests" / "benchmarks"))
    for path in sorted((ROOT / "conf" / "presets").glob("*.yaml")):
        assert read_preset(path) == yaml.safe_load(path.read_text()), path.name
