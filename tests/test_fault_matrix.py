"""Every stage x every fault, end to end with the real Ray, Prefect and MLflow, on a tiny run (8x8 digits, one epoch);
and two runs at once in the working folder.

Faults, by the test hook GAN_PIPELINE_FAIL_AT (pipelines/faults.py): a transient error (`stage:once`, the first attempt
fails and Prefect's retry recovers it in the same run), a persistent one (`stage`, the run fails with one line and exit 1;
the re-run starts at that stage, earlier ones from cache) and a SIGKILL of the flow's process (`kill:stage`; the re-run
redoes or finishes the stage and takes nothing half-written for an output).

One working folder, nine runs in a chain, each run's fatal fault one stage further on, each re-run also the next
cell's run:

    1 ingest                  persistent ingest
    2 kill:ingest             killed ingest (its dataset half written, beside where it goes)
    3 ingest:once,train       transient ingest, persistent train
    4 train:once,evaluate     transient train, persistent evaluate
    5 kill:evaluate           killed evaluate (pictures written aside, report not yet published)
    6 evaluate:once,register  transient evaluate, persistent register
    7 kill:register           killed register (version registered, aliases not yet moved)
    8 register:once           transient register; the run completes
    9 (train.seed=7)          started while run 8 holds the working folder's lock: it waits, then trains its own model

Each run's summary (gan-work/runs/<flow run id>.json, written for failed runs too) says per stage whether it ran, came
from cache or failed; Prefect's log, how many attempts failed. The runs share one `prefect server` (as scheduled runs do) instead of
each starting a temporary one: about 10 s less per run. Elsewhere: a crash mid-training retried from its checkpoint
(`train:1`) and a persistent evaluation failure in tests/test_pipeline.py; the flow's process killed mid-training and
resumed from its checkpoint in tests/test_resume.py; the lock itself in tests/test_concurrent_runs.py.
"""

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.stages import STAGES
from tests.services import BIN, free_port, start, stop_group, wait_healthy
from tests.test_pipeline import CLI, SMOKE, TINY, cli, cli_env, registry

pytestmark = pytest.mark.integration

RUN = ("run", "-c", SMOKE, *(arg for item in (*TINY, "registry.model_name=fault-gan") for arg in ("--set", item)))
CHAIN = ("ingest", "kill:ingest", "ingest:once,train", "train:once,evaluate", "kill:evaluate", "evaluate:once,register",
         "kill:register", "register:once")


def prefect_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    """`prefect server start` with its database in the working folder's Prefect home; the process and its API URL."""
    port = free_port()
    process = start([BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"],
                    workdir / "prefect-server.log", cli_env(workdir), new_session=True)
    wait_healthy(f"http://127.0.0.1:{port}/api/health", process)
    return process, f"http://127.0.0.1:{port}/api"


def start_run(workdir: Path, log: Path, env: dict, *extra: str) -> subprocess.Popen:
    """A run with its output in a file (a killed run's leftovers could hold a pipe open), leading a session of its own."""
    with log.open("w") as out:
        return subprocess.Popen([CLI, *RUN, *extra], cwd=workdir, env=cli_env(workdir, env), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def finish(process: subprocess.Popen, log: Path) -> tuple[int, str]:
    """Wait for a run, stop what it left running in its session, if anything; its exit status and output."""
    try:
        process.wait(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, log.read_text()


def wait_for_lock(workdir: Path, process: subprocess.Popen) -> None:
    """Until `process` holds the working folder's lock (the lock file names its holder)."""
    lock = workdir / "gan-work" / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text() == f"pid {process.pid}"):
        assert process.poll() is None and time.monotonic() < deadline, "the run never took the lock"
        time.sleep(0.1)


def registry_state(workdir: Path) -> dict:
    """Versions (number -> run id and promotion tag) and aliases of the test's model."""
    client = registry(workdir)
    found = client.search_registered_models("name = 'fault-gan'")
    versions = client.search_model_versions("name = 'fault-gan'") if found else []
    return {"versions": {str(v.version): (v.run_id, v.tags.get("promotion")) for v in versions},
            "aliases": {alias: str(v) for alias, v in found[0].aliases.items()} if found else {}}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The nine runs in one working folder: per run its exit status, output and summary; what the kills left."""
    workdir = tmp_path_factory.mktemp("faults")
    server, api = prefect_server(workdir)
    try:
        return {"workdir": workdir, "runs": run_chain(workdir, {"PREFECT_API_URL": api})}
    finally:
        stop_group(server)


def run_chain(workdir: Path, env: dict) -> dict[int, dict]:
    runs_dir, evaluations = workdir / "gan-work" / "runs", workdir / "gan-work" / "evaluations"
    done, seen = {}, set()
    for n, hook in enumerate(CHAIN, 1):
        log = workdir / f"run{n}.log"
        if hook.startswith("kill:"):
            rc, out = finish(start_run(workdir, log, {**env, "GAN_PIPELINE_FAIL_AT": hook}), log)
            done[n] = {"hook": hook, "rc": rc, "out": out}
        elif n < len(CHAIN):
            result = cli(workdir, *RUN, env={**env, "GAN_PIPELINE_FAIL_AT": hook})
            done[n] = {"hook": hook, "rc": result.returncode, "out": result.stdout + result.stderr}
        else:  # the last, and a run of another training seed started while it holds the lock
            last = start_run(workdir, log, {**env, "GAN_PIPELINE_FAIL_AT": hook})
            wait_for_lock(workdir, last)
            other = start_run(workdir, workdir / f"run{n + 1}.log", env, "--set", "train.seed=7")
            for m, (hooked, process) in enumerate(((hook, last), ("", other)), n):
                rc, out = finish(process, workdir / f"run{m}.log")
                done[m] = {"hook": hooked, "pid": process.pid, "rc": rc, "out": out}
        new = sorted(set(runs_dir.glob("*.json")) - seen) if runs_dir.is_dir() else []
        seen |= set(new)
        for run in (done[n], done.get(n + 1, {})):
            if run:
                run["summary"] = own_summary(new, run["out"])
        if hook == "kill:ingest":  # what the killed ingest left: `written_aside`'s hidden folder, in part written
            datasets = workdir / "gan-work" / "datasets"
            done[n]["left"] = {p.name: sorted(str(f.relative_to(p)) for f in p.rglob("*")) for p in datasets.glob(".tmp-*")}
        if hook == "kill:evaluate":  # what the killed evaluation left in its folder
            done[n]["evaluations"] = {p.name: sorted(f.name for f in p.iterdir()) for p in evaluations.iterdir()}
        if hook == "kill:register":
            done[n]["registry"] = registry_state(workdir)
    return done


def own_summary(new: list[Path], out: str) -> dict | None:
    """The summary a run wrote: of those new since the run before, the one its output names (a completed run prints the
    path), else the only one."""
    found = [p for p in new if str(p) in out] or (new if len(new) == 1 else [])
    return json.loads(found[0].read_text()) if found else None


def statuses(run: dict) -> dict[str, str]:
    """stage -> ran | cached | failed, from the run's summary."""
    assert run["summary"] is not None, f"run {run['hook']!r} wrote no summary: {run['out'][-3000:]}"
    return {stage: s["status"] for stage, s in run["summary"]["stages"].items()}


def attempts(run: dict, stage: str, said: str) -> int:
    """How many of the stage's attempts failed with this injected message, by Prefect's log line for each."""
    return run["out"].count(f"Task run failed with exception: InjectedFailure(\"{stage}: {said}")


def killed_in(run: dict, stage: str, where: str) -> None:
    assert run["rc"] == -signal.SIGKILL, run["out"][-3000:]
    assert f"[{stage}] SIGKILL injected by GAN_PIPELINE_FAIL_AT='kill:{stage}' {where}" in run["out"], run["out"][-3000:]
    assert run["summary"] is None  # a killed process writes nothing more


def resumed_at(run: dict, stage: str) -> None:
    """Every stage before `stage` came from cache; `stage` ran."""
    before = STAGES[: STAGES.index(stage)]
    found = statuses(run)
    assert {s: found[s] for s in before} == dict.fromkeys(before, "cached") and found[stage] == "ran", found


# --- transient and persistent errors, stage by stage: (stage, the run it failed in, its re-run) ---------------------

@pytest.mark.parametrize(("stage", "run"), [("ingest", 3), ("train", 4), ("evaluate", 6), ("register", 8)])
def test_a_transient_failure_is_retried_and_recovered_in_the_same_run(chain: dict, stage: str, run: int) -> None:
    """The stage's first attempt failed, Prefect retried it once, and it ran to its end in the same run."""
    found = chain["runs"][run]
    assert found["out"].count(f"{stage}: transient failure injected by") == 1, found["out"][-3000:]
    assert attempts(found, stage, "transient failure injected by") == 1
    assert f"Retry 1/{1 if stage == 'train' else 2} will start" in found["out"]
    assert statuses(found)[stage] == "ran"
    # (train crashed mid-epoch and retried from its checkpoint: `train:1` in tests/test_pipeline.py)


# Runs 2, 5 and 7 were re-runs too, killed in the stage they had come back to; the next re-run is the one to say more.
@pytest.mark.parametrize(("stage", "failed", "rerun"), [("ingest", 1, 3), ("train", 3, 4), ("evaluate", 4, 6), ("register", 6, 8)])
def test_a_persistent_failure_fails_the_run_in_one_line_and_the_rerun_starts_at_that_stage(
    chain: dict, stage: str, failed: int, rerun: int
) -> None:
    """Exit 1, one line saying which stage failed and why; the run's summary marks that stage failed after every attempt
    and nothing after it started; the re-run takes every earlier stage from cache and runs that one."""
    run = chain["runs"][failed]
    assert run["rc"] == 1, run["out"][-3000:]
    errors = [line for line in run["out"].splitlines() if line.startswith("error:")]
    hook = f"GAN_PIPELINE_FAIL_AT={run['hook']!r}"
    said = f"error: the pipeline failed: InjectedFailure: {stage}: failure injected by {hook} (every attempt) (every process's output in "
    assert len(errors) == 1 and errors[0].startswith(said), errors
    assert run["summary"]["failed"] == f"InjectedFailure: {stage}: failure injected by {hook} (every attempt)"
    assert list(statuses(run))[-1] == stage and statuses(run)[stage] == "failed"
    tries = {"ingest": 3, "train": 2, "evaluate": 3, "register": 3}[stage]  # each task's retries + 1
    assert attempts(run, stage, "failure injected by") == tries
    resumed_at(chain["runs"][rerun], stage)


# --- SIGKILL, stage by stage ---------------------------------------------------------------------------------------

def test_ingest_killed_leaves_no_dataset_and_the_rerun_writes_a_whole_one(chain: dict) -> None:
    runs, workdir = chain["runs"], chain["workdir"]
    killed_in(runs[2], "ingest", "with a shard written and no manifest")
    ((half, files),) = runs[2]["left"].items()  # the killed writer's folder: one shard in, no manifest
    assert any(f.endswith(".parquet") for f in files) and "manifest.json" not in files, files
    resumed_at(runs[3], "ingest")
    datasets = workdir / "gan-work" / "datasets"
    assert not list(datasets.glob(".tmp-*"))  # the dead writer's half dataset: removed by the re-run
    (dataset,) = datasets.iterdir()
    assert str(dataset) == runs[3]["summary"]["dataset"] and half.startswith(f".tmp-{dataset.name}-")
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert {split: pq.read_table(dataset / split).num_rows for split in ("train", "heldout")} == manifest["rows"]


# (train killed mid-epoch, the re-run resuming from its latest checkpoint with ingest from cache: tests/test_resume.py)


def test_evaluate_killed_mid_write_publishes_nothing_and_the_rerun_writes_the_whole_report(chain: dict) -> None:
    runs = chain["runs"]
    killed_in(runs[5], "evaluate", "with its pictures written aside and its report not yet published")
    left = runs[5]["evaluations"]
    assert [name for name in left if not name.startswith(".tmp-")] == []  # nothing published
    (half,) = left.values()
    assert "samples.png" in half and "report.json" not in half
    resumed_at(runs[6], "evaluate")
    report = Path(runs[6]["summary"]["report"])
    assert report.is_file() and {"samples.png", "real.png", "curves.png"} <= {p.name for p in report.parent.iterdir()}
    assert not list(report.parent.parent.glob(".tmp-*"))  # the killed writer's folder: removed


def test_register_killed_between_version_and_aliases_is_finished_by_the_rerun(chain: dict) -> None:
    runs = chain["runs"]
    killed_in(runs[7], "register", "with fault-gan v1 registered and its aliases not yet moved")
    ((run_id, _),) = runs[7]["registry"]["versions"].values()
    assert runs[7]["registry"] == {"versions": {"1": (run_id, None)}, "aliases": {}}  # registered, the gate never decided
    resumed_at(runs[8], "register")
    assert "was registered by a run that stopped before the promotion gate; deciding now" in runs[8]["out"]
    # The same version, not a second one, now decided by the gate (run 9 moves the aliases on afterwards).
    registered = runs[8]["summary"]["registered"]
    assert (str(registered["version"]), registered["run_id"], registered["champion"]) == ("1", run_id, True) and runs[8]["rc"] == 0
    assert registry_state(chain["workdir"])["versions"]["1"] == (run_id, "no champion yet")


# --- two runs at once ----------------------------------------------------------------------------------------------

def test_a_run_started_during_another_waits_for_it_then_registers_its_own_model(chain: dict) -> None:
    """Run 9 (train.seed 7) was started while run 8 held the working folder's lock: it waited, then ran with a Ray, Prefect
    and MLflow of its own turn, trained into its own Ray Train run, and the gate judged its version against run 8's."""
    from gan import checkpoint as ckpt  # noqa: PLC0415
    from pipelines.registry import promotion  # noqa: PLC0415
    from pipelines.config import RegistryConfig  # noqa: PLC0415

    first, second = chain["runs"][8], chain["runs"][9]
    assert second["rc"] == 0, second["out"][-3000:]
    assert f"waiting for another run in this working folder (pid {first['pid']}) to finish" in second["out"]
    assert "waiting for another run" not in first["out"]
    assert first["summary"]["flow_started_unix"] < second["summary"]["flow_started_unix"]
    assert statuses(second) == {"ingest": "cached", "train": "ran", "evaluate": "ran", "register": "ran"}

    checkpoints = [Path(run["summary"]["train"]["checkpoint"]) for run in (first, second)]
    assert checkpoints[0].parent != checkpoints[1].parent  # two Ray Train runs, named by their configs
    assert ckpt.config_of(ckpt.load(checkpoints[1]))["train"]["seed"] == 7 != ckpt.config_of(ckpt.load(checkpoints[0]))["train"]["seed"]
    assert not list((chain["workdir"] / "gan-work").rglob(".tmp-*"))

    client = registry(chain["workdir"])
    versions = {str(v.version): v for v in client.search_model_versions("name = 'fault-gan'")}
    assert sorted(versions) == ["1", "2"] and str(second["summary"]["registered"]["version"]) == "2"
    assert [versions[v].tags["checkpoint"] for v in ("1", "2")] == [str(c) for c in checkpoints]
    standing = {v: promotion.Standing.of_tags(v, versions[v].tags) for v in ("1", "2")}
    promoted, why = promotion.decide(standing["2"], standing["1"], "1", RegistryConfig().max_memorised_share)
    assert registry_state(chain["workdir"])["aliases"] == {"champion": "2" if promoted else "1", "challenger": "2"}
    assert versions["2"].tags["promotion"] == why
