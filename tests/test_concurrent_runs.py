"""Two runs in one working folder take turns: the folder's lock (`pipelines/workspace.py`, `acquire_workspace_lock`) makes the
second wait for the first, so they never share a local Ray, write the Prefect and MLflow databases together or promote
against each other. Fast: the lock itself, with other processes. End to end (a second `gan-pipeline run` started while
another holds the lock, waiting, then registering its own version against the first's): tests/test_fault_matrix.py."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipelines.workspace import Workspace, acquire_workspace_lock, release_workspace_locks, workspace_lock

ROOT = Path(__file__).resolve().parents[1]
TAKE_LOCK = "import sys, time; from pipelines.workspace import Workspace, workspace_lock\n" \
            "with workspace_lock(Workspace.of(sys.argv[1])):\n    print('locked', flush=True); time.sleep(float(sys.argv[2]))"


def take_lock(workdir: Path, hold_seconds: float) -> subprocess.Popen:
    """Another process taking the working folder's lock, holding it for a while."""
    return subprocess.Popen([sys.executable, "-c", TAKE_LOCK, str(workdir), str(hold_seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_second_run_waits_for_the_lock_and_says_whose_it_is(tmp_path: Path) -> None:
    workspace = Workspace.of(str(tmp_path / "gan-work"))
    try:
        assert acquire_workspace_lock(workspace) and not acquire_workspace_lock(workspace)  # re-entrant: the CLI, then its flow
        with workspace_lock(workspace):  # re-entered: leaving it keeps the lock
            pass
        other = take_lock(workspace.root, 0)
        said = other.stderr.readline()  # once it has found the lock taken
        assert said == f"waiting for another run in this working folder (pid {os.getpid()}) to finish: {workspace.root}\n"
        time.sleep(1)
        assert other.poll() is None  # still waiting
    finally:
        release_workspace_locks()
    out, err = other.communicate(timeout=60)
    assert out == "locked\n" and err == ""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = take_lock(tmp_path / "gan-work", 600)
    assert holder.stdout.readline() == "locked\n"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    try:
        started = time.time()
        assert acquire_workspace_lock(Workspace.of(str(tmp_path / "gan-work")))
        assert time.time() - started < 5
    finally:
        release_workspace_locks()
