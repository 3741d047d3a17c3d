"""Exact resume and the collapse gate, end to end, on the article's MLP GAN (conf/smoke.yaml, 4 epochs).

A 2-worker Ray Train run loses a worker to SIGKILL (Ray Train restores the group from its latest checkpoint),
then the whole `gan-pipeline run` process group to SIGKILL mid-epoch; the same command, run again, ends with
the very weights of a run that was never interrupted. Bitwise on CPU: every random stream is re-seeded per
(rank, epoch) from the config's seed, the data shards reach the ranks in file order, and the checkpoint holds
the rest of the state (networks, EMA, optimisers, step, schedules); a resume starts at the epoch boundary of
the latest checkpoint.

In 4 epochs this GAN collapses (its samples fall into one or two classes), so with the evaluation's collapse
gate on (the default; smoke.yaml turns it off) both runs are evaluated and refused by the registry.
"""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.test_pipeline import CLI, SMOKE, cli, cli_env, registry, summaries

pytestmark = pytest.mark.integration

# With a time budget, as the default config has: planned once after the first epoch (here all 4 epochs), kept in checkpoints.
RUN = ("run", "-c", SMOKE, "--set", "train.epochs=4", "--set", "train.max_minutes=30", "--set", "ray.max_failures=1",
       "--set", "eval.collapse_ratio=0.25")
STATE_KEYS = ("G", "D", "G_ema", "opt_G", "opt_D")


def checkpoint_epochs(workdir: Path) -> list[int]:
    """Epochs of the checkpoints Ray Train has persisted so far (a folder counts once its metrics are written)."""
    found = (workdir / "gan-work" / "ray_results").glob("train-*/checkpoint_*/metrics.json")
    return sorted(json.loads(p.read_text())["epoch"] for p in found if p.stat().st_size)


def final_state(workdir: Path) -> dict:
    path = Path(summaries(workdir)[-1]["train"]["checkpoint"]) / "state.pt"
    return torch.load(path, map_location="cpu", weights_only=True)


def tensors(state: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested state dict, by its path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    reference_dir, killed_dir = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("killed")
    reference = cli(reference_dir, *RUN)

    # The last rank kills itself in epoch 2: Ray Train (max_failures 1) restarts the group from epoch 1's checkpoint.
    env = cli_env(killed_dir, {"GAN_PIPELINE_FAIL_AT": "kill-worker:1"})
    with (killed_dir / "killed.log").open("w") as log:
        run = subprocess.Popen([CLI, *RUN], cwd=killed_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 400
        while 3 not in checkpoint_epochs(killed_dir) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = run.poll() is None
        os.killpg(run.pid, signal.SIGKILL)  # the CLI, its Prefect server, Ray and its workers: everything it started
        run.wait()
    killed = {"alive_at_kill": alive, "log": (killed_dir / "killed.log").read_text(), "epochs": checkpoint_epochs(killed_dir)}
    again = cli(killed_dir, *RUN)
    return {"reference": reference, "reference_dir": reference_dir, "killed": killed, "again": again, "killed_dir": killed_dir}


def test_a_run_killed_twice_resumes_to_the_weights_of_an_uninterrupted_run(runs: dict) -> None:
    killed, again = runs["killed"], runs["again"]
    assert killed["alive_at_kill"], f"the run ended before epoch 3's checkpoint: {killed['log'][-3000:]}"
    assert "SIGKILL injected in epoch 2, after the checkpoint of epoch 1" in killed["log"]
    assert "[train] resumed from epoch 1, step 31" in killed["log"], killed["log"][-3000:]  # Ray Train restored the group
    assert max(killed["epochs"]) < 4, "the run finished before it was killed"
    resumed = [int(e) for e in re.findall(r"\[train\] resumed from epoch (\d+)", again.stdout + again.stderr)]
    assert resumed and resumed[0] >= 3, again.stdout[-3000:]
    # The stage x fault matrix's "train killed" cell (tests/test_fault_matrix.py has the others): the re-run took ingest
    # from cache, resumed training from the latest complete checkpoint, and no temporary was left or taken as an output.
    stages = summaries(runs["killed_dir"])[-1]["stages"]
    assert (stages["ingest"]["status"], stages["train"]["status"]) == ("cached", "ran"), stages
    assert not list((runs["killed_dir"] / "gan-work").rglob(".tmp-*"))

    expected, actual = final_state(runs["reference_dir"]), final_state(runs["killed_dir"])
    assert (expected["step"], expected["epoch"]) == (actual["step"], actual["epoch"]) == (124, 4)
    for key in STATE_KEYS:
        a, b = tensors(expected[key]), tensors(actual[key])
        assert a.keys() == b.keys(), key
        different = [name for name in a if not torch.equal(a[name], b[name])]
        assert not different, f"{key}: {len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


def test_the_collapsed_article_gan_is_evaluated_and_refused_by_the_registry(runs: dict) -> None:
    for done, workdir in ((runs["reference"], runs["reference_dir"]), (runs["again"], runs["killed_dir"])):
        assert done.returncode == 3, done.stderr[-3000:]
        assert "not registered: the samples collapsed onto" in done.stderr, done.stderr[-3000:]
        assert "Traceback" not in done.stdout + done.stderr
        report = json.loads(Path(summaries(workdir)[-1]["report"]).read_text())
        assert report["model"]["effective_classes"] < 0.25 * report["real_vs_real"]["effective_classes"]
        assert report["collapsed"].startswith("the samples collapsed onto")
        assert registry(workdir).search_registered_models() == []  # nothing registered, not even an empty model
