"""The watchdog: a NaN rolls training back with halved learning rates and the run finishes; too many fail
clearly; D winning outright and sample collapse are recorded; a collapsed run has a refusal reason."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gan import watchdog
from gan.metrics.classes import class_histogram, effective_classes
from gan.config import TrainConfig
from gan.latent import Latent
from gan.state import TrainingState, build_state
from tests.test_training_loop import SHAPE, recipe, run

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS_PER_EPOCH = 16  # 512 digits / batch 32


def test_an_injected_nan_is_rolled_back_with_halved_learning_rates_and_the_run_finishes() -> None:
    sink = run(recipe(train=dict(epochs=3, checkpoint_every_epochs=1)), nan_at_step=STEPS_PER_EPOCH + 5)  # in the second epoch
    final = sink.states[-1]
    events = json.loads(final["events_json"])
    assert [e["kind"] for e in events] == [watchdog.ROLLBACK], events
    assert events[0]["step"] == 2 * STEPS_PER_EPOCH and events[0]["detail"].startswith("loss_d = nan"), events
    assert final["lr_scale"] == 0.5 and final["epoch"] == 3 and final["step"] == 3 * STEPS_PER_EPOCH
    assert all(torch.isfinite(t).all() for net in ("G", "D", "G_ema") for t in final[net].values() if t.is_floating_point())
    assert any(h.get("watchdog_rollbacks") == 1.0 for h in json.loads(final["history_json"])), "the rollback is not in the logged metrics"
    assert sink.epochs[-1]["watchdog_rollbacks"] == 1.0 and math.isfinite(sink.epochs[-1]["loss_d"])
    # The epoch that went wrong was redone: epochs 1, 3 and the redone 2 reported; epoch 2's NaN one did not.
    assert [m["epoch"] for m in sink.epochs] == [1, 2, 3]


def test_a_run_that_keeps_diverging_fails_naming_the_step_and_the_statistic() -> None:
    with pytest.raises(watchdog.TrainingDiverged, match=r"training diverged at step 16 \(epoch 1\): loss_d = nan; .*max_rollbacks"):
        run(recipe(train=dict(epochs=2, max_rollbacks=0)), nan_at_step=3)


def test_the_nan_drill_is_read_by_the_driver_names_its_own_run_and_refuses_a_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drill's step is handed to every worker (not read by the loop from its own environment); a run with the drill
    is another run than the same config without it, so a later normal run never takes the drill's checkpoint."""
    from gan.config import ConfigError  # noqa: PLC0415
    from pipelines.config import PipelineConfig  # noqa: PLC0415
    from pipelines.faults import NAN_HOOK, nan_at_step  # noqa: PLC0415
    from pipelines.stages.train import run_name  # noqa: PLC0415

    cfg, manifest = PipelineConfig(), {"fingerprint": "data"}
    monkeypatch.delenv(NAN_HOOK, raising=False)
    normal = run_name(cfg, manifest)
    assert nan_at_step() is None
    monkeypatch.setenv(NAN_HOOK, "40")
    assert nan_at_step() == 40 and run_name(cfg, manifest) != normal
    for bad in ("abc", "0", "-3", "4.5"):
        monkeypatch.setenv(NAN_HOOK, bad)
        with pytest.raises(ConfigError, match=f"GAN_INJECT_NAN_AT_STEP='{bad}': expected a step number"):
            nan_at_step()


def test_a_divergence_inside_ray_trains_worker_group_error_is_found() -> None:
    from ray.train import WorkerGroupError

    from pipelines.cluster.fit import failure_cause

    inner = watchdog.TrainingDiverged("training diverged at step 16")
    wrapped = RuntimeError("user code failed")
    wrapped.__cause__ = inner
    assert failure_cause(WorkerGroupError("rank 0 failed", {0: wrapped}), watchdog.TrainingDiverged) is inner
    assert failure_cause(WorkerGroupError("rank 0 failed", {0: ValueError("other")}), watchdog.TrainingDiverged) is None


def test_nonfinite_names_the_first_bad_number() -> None:
    assert watchdog.nonfinite({"loss_d": float("nan")}, {}) == "loss_d = nan"
    net = torch.nn.Linear(2, 2)
    assert watchdog.nonfinite({"loss_d": 0.5}, {"D": net}) is None
    net.weight.grad = torch.full_like(net.weight, float("inf"))
    assert watchdog.nonfinite({}, {"D": net}) == "gradient of D.weight is not finite"


def test_d_wins_is_defined_for_probability_losses_only() -> None:
    t = TrainConfig(loss="ns")
    assert watchdog.d_wins(t, {"d_real": 0.99, "d_fake": 0.01})
    assert not watchdog.d_wins(t, {"d_real": 0.9, "d_fake": 0.01})
    assert not watchdog.d_wins(TrainConfig(loss="hinge"), {"d_real": 5.0, "d_fake": -5.0})  # logits: no such threshold


def test_collapse_is_an_event_a_registry_refuses_until_a_later_check_clears_it() -> None:
    s = TrainingState(*(None,) * 7)
    t = TrainConfig(collapse_min_steps=0)
    real = torch.rand(16, 1, 8, 8)
    dog = watchdog.Watchdog(s, t)
    dog.see_real(real)
    check_samples = dog.check_samples
    check_samples(real)
    assert s.events == [] and watchdog.verdict(s.events) is None
    s.epoch = 4
    check_samples(real[:1].repeat(16, 1, 1, 1) + 1e-3 * torch.rand(16, 1, 8, 8))  # one image, 16 times
    assert [e["kind"] for e in s.events] == [watchdog.COLLAPSE]
    assert "collapsed (epoch 4" in watchdog.verdict(s.events)
    check_samples(real)
    assert watchdog.verdict(s.events) is None and s.events[-1]["kind"] == watchdog.CLEARED
    assert [round(h["sample_diversity_ratio"], 2) for h in s.history][::2] == [1.0, 1.0]


def test_the_evaluation_gate_refuses_samples_in_too_few_effective_classes() -> None:
    one_class, uniform = class_histogram(np.tile(np.eye(10)[3], (100, 1))), np.full(10, 0.1)
    assert effective_classes(one_class) == pytest.approx(1.0) and effective_classes(uniform) == pytest.approx(10.0)
    refused = watchdog.class_collapse(1.0, 9.9, 0.25)
    assert refused and refused.startswith("the samples collapsed onto 1.00 effective classes") and "9.90" in refused
    assert watchdog.class_collapse(5.0, 9.9, 0.25) is None and watchdog.class_collapse(1.0, 9.9, 0.0) is None


def test_a_worker_group_that_cannot_be_placed_becomes_one_line_naming_what_and_where(tmp_path: Path) -> None:
    from ray.train import ControllerError
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    from pipelines.config import PipelineConfig
    from pipelines.errors import ClusterUnavailable
    from pipelines.cluster.fit import placement_failure

    cfg = PipelineConfig.model_validate({"ray": {"num_workers": 2, "placement_retries": 1, "worker_resources": {"slot": 1}}})
    resources = {"CPU": 0.5, "slot": 1.0}
    found = placement_failure(ControllerError(WorkerGroupStartupTimeoutError(2)), cfg, resources, "s3://bucket/gan/train-x")
    assert isinstance(found, ClusterUnavailable)
    assert "could not place 2 training workers needing {'CPU': 0.5, 'slot': 1.0} each (2 tries; the worker group startup timed out" in str(found)
    assert "kept in s3://bucket/gan/train-x: run again" in str(found) and "\n" not in str(found)
    assert placement_failure(ControllerError(RuntimeError("other")), cfg, resources, str(tmp_path)) is None


def test_a_second_rollback_to_the_same_good_state_restores_it_as_the_first_did() -> None:
    """An optimiser loading a state keeps that state's tensors and steps them in place: the rollback loads a copy, or
    training on after it would change the good state that the next rollback restores."""
    r = recipe(train=dict(epochs=1))
    s = build_state(r, SHAPE, Latent.of(r.model, 10), torch.device("cpu"))
    for p in s.D.parameters():
        p.grad = torch.ones_like(p)
    s.opt_D.step()  # moments to keep
    dog = watchdog.Watchdog(s, r.train)
    dog.keep()
    kept = [state["exp_avg"].clone() for state in s.opt_D.state.values()]
    for rollback in (1, 2):
        for state in s.opt_D.state.values():
            state["exp_avg"].add_(1.0)  # training on, in place, as Adam does
        dog.roll_back("loss_d = nan")
        assert all(torch.equal(state["exp_avg"], k) for state, k in zip(s.opt_D.state.values(), kept)), f"rollback {rollback}"


def test_a_rollback_resets_the_d_wins_streak() -> None:
    """The epochs a streak counted are undone by a rollback: the streak starts again from the restored state."""
    r = recipe(train=dict(epochs=1, loss="ns"))
    s = build_state(r, SHAPE, Latent.of(r.model, 10), torch.device("cpu"))
    t = r.train.model_copy(update={"d_wins_epochs": 3})
    dog = watchdog.Watchdog(s, t)
    dog.keep()
    for _ in range(2):
        dog.watch_balance({"d_real": 0.99, "d_fake": 0.01}, is_main=True)
    assert dog.d_wins_streak == 2
    dog.roll_back("loss_d = nan")
    assert dog.d_wins_streak == 0 and watchdog.rollbacks(s.events) == 1


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_an_fp16_overflow_at_an_epochs_last_step_is_no_divergence(precision: str) -> None:
    """fp16's loss scaler skips a step whose gradients overflowed and lowers its scale: the inf gradients it leaves
    after an epoch's last step are expected, not a reason to roll back. In fp32 they are one."""
    r = recipe(train=dict(epochs=1, precision=precision))
    s = build_state(r, SHAPE, Latent.of(r.model, 10), torch.device("cpu"))
    next(s.D.parameters()).grad = torch.full_like(next(s.D.parameters()), float("inf"))
    problem = watchdog.Watchdog(s, r.train).problem({"loss_d": 1.0})
    assert (problem is None) == (precision == "fp16"), problem


def test_an_fp16_run_whose_last_step_overflows_finishes_without_a_rollback(monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end in the loop: D's gradients overflow in the epoch's last step (16 of 16); the scaler skips that step."""
    import gan.training_loop as loop  # noqa: PLC0415

    original, calls = loop.step_phase, []

    def overflowing(phase, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(phase.name)
        if calls.count("D") == 16 and phase.name == "D":
            for p in phase.net.parameters():
                p.grad.fill_(float("inf"))
        return original(phase, *args, **kwargs)

    monkeypatch.setattr(loop, "step_phase", overflowing)
    state = run(recipe(train=dict(epochs=1, precision="fp16"))).states[-1]
    assert state["step"] == 16 and calls.count("D") == 16
    assert not [e for e in json.loads(state["events_json"]) if e["kind"] == watchdog.ROLLBACK]
    assert all(torch.isfinite(v).all() for v in state["D"].values() if v.is_floating_point())  # the step was skipped
