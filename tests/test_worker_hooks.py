"""The training fault hooks (`train:N`, `kill-worker:N`) fire on the event they are about, Ray Train's controller holding
the checkpoint of epoch N, never after a count of batches: a group restored from that checkpoint goes on past them,
on a fast machine and a slow one alike. Unit tests of the worker's side; tests/test_resume.py runs it end to end."""

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
import pytest

from gan.distributed import WorkerContext
from pipelines.cluster import worker
from pipelines.cluster.worker import RayTrainSink, controller_has_checkpoint
from pipelines.faults import InjectedFailure


def sink(tmp_path: Path, hooks: dict, rank: int = 0, resumed_epoch: int = 0) -> RayTrainSink:
    return RayTrainSink(WorkerContext(rank=rank, world_size=2), tmp_path, hooks, resumed_epoch, {})


def slow_registration(after_polls: int) -> tuple[list[int], object]:
    """A controller that registers the checkpoint only at the `after_polls`-th look, and the list of looks."""
    polls: list[int] = []

    def registered(epoch: int) -> bool:
        polls.append(epoch)
        return len(polls) >= after_polls

    return polls, registered


def test_the_crash_waits_for_the_registration_however_many_batches_pass(tmp_path: Path) -> None:
    polls, registered = slow_registration(after_polls=4)
    s = sink(tmp_path, {"train": 1})
    for epoch, index in [(0, 0), *((1, i) for i in range(1, 200))]:  # epoch 0, and epoch 1 past its first batch: no fire
        s.batch_start(epoch, index, registered)
    assert polls == []
    with pytest.raises(InjectedFailure, match="after the checkpoint of epoch 1"):
        s.batch_start(1, 0, registered)
    assert polls == [1, 1, 1, 1]  # it fired at the registration, not before


def test_the_kill_is_the_last_ranks_and_waits_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[int] = []
    monkeypatch.setattr(worker.os, "kill", lambda pid, sig: kills.append(sig))
    polls, registered = slow_registration(after_polls=3)
    sink(tmp_path, {"kill-worker": 2}, rank=0).batch_start(2, 0, registered)  # not the last rank
    assert (kills, polls) == ([], [])
    sink(tmp_path, {"kill-worker": 2}, rank=1).batch_start(2, 0, registered)
    assert kills == [worker.signal.SIGKILL] and polls == [2, 2, 2]


def test_a_group_restored_from_that_checkpoint_goes_on(tmp_path: Path) -> None:
    polls, registered = slow_registration(after_polls=1)
    sink(tmp_path, {"train": 1, "kill-worker": 1}, rank=1, resumed_epoch=1).batch_start(1, 0, registered)
    sink(tmp_path, {"train": 1}, rank=0, resumed_epoch=3).batch_start(1, 0, registered)
    assert polls == []


def test_a_registration_that_never_comes_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "REGISTERED_WAIT_S", 0.3)
    with pytest.raises(AssertionError, match="for the checkpoint of epoch 1 registered"):
        sink(tmp_path, {"train": 1}).batch_start(1, 0, lambda epoch: False)


def test_the_controllers_snapshot_is_read_as_ray_train_writes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray.train  # noqa: PLC0415

    snapshot = tmp_path / "checkpoint_manager_snapshot.json"
    storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(), checkpoint_manager_snapshot_path=str(snapshot))
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace(get_storage=lambda: storage))
    assert not controller_has_checkpoint(1)  # no snapshot yet
    snapshot.write_text('{"latest_checkpoint_result": {"checkpoint_dir_na')  # being written
    assert not controller_has_checkpoint(1)
    snapshot.write_text(json.dumps({"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_x", "metrics": {"epoch": 2}}}))
    assert controller_has_checkpoint(1) and controller_has_checkpoint(2) and not controller_has_checkpoint(3)


def test_unequal_shards_are_refused_before_the_first_step() -> None:
    worker.check_equal_batches([12.0, 12.0], 64)
    with pytest.raises(AssertionError, match=r"shards hold \[12, 11\] batches of 64"):
        worker.check_equal_batches([12.0, 11.0], 64)
