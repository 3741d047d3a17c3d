"""Lineage you can query, against a real registry: the versions table, and a version's chain with every link checked:
present after a fresh registration, and marked missing, with the reason, once what it names is gone or does not match."""

import importlib.metadata
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import mlflow
import pytest

from gan.checkpoint import STATE_FILE
from gan.data.manifest import read_manifest
from pipelines.cluster.ray import RAY_RUN_RECORD
from pipelines.errors import UsageError
from pipelines.provenance import DISTRIBUTION, commit_exists, git_sha
from pipelines.registry import lineage
from pipelines.registry.lineage import chain, prefect_link, versions_table
from pipelines.stages.ingest import ingest
from pipelines.workspace import Workspace
from tests import services
from tests.registry_store import checkpoints, config, registered

ROOT = Path(__file__).resolve().parents[1]
LINKS = ["model version", "MLflow run", "Prefect flow run", "Ray Train run", "checkpoint", "warm start", "dataset", "data change",
         "resolved config", "code"]


def links_of(*args: object) -> dict[str, lineage.Link]:
    return {link.what: link for link in chain(*args)}


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
def test_versions_and_the_chain_of_a_registered_version(client: mlflow.MlflowClient, tmp_path: Path, cli: Callable) -> None:
    """Two versions registered through register() from tiny real checkpoints, outside a flow run: listed with their aliases
    and scores; every link of the champion's chain is there but the flow run; then each missing piece is marked."""
    cfg = config(tmp_path)
    dataset = ingest(cfg)
    first, second = checkpoints(tmp_path / "gan-work" / "ray_results" / "train-test", epochs=2)
    v1, v2 = registered(cfg, dataset, first, 50.0), registered(cfg, dataset, second, 60.0)  # champion, then a worse challenger

    rows = versions_table(cfg, "m")
    assert [(r.version, r.aliases, r.fid, r.fid_std, r.floor_fid, r.memorised_share, r.run_id) for r in rows] == [
        (2, ("challenger",), 60.0, 0.5, 1.0, 0.01, v2["run_id"]), (1, ("champion",), 50.0, 0.5, 1.0, 0.01, v1["run_id"]),
    ]
    assert all(abs(r.created.timestamp() - time.time()) < 600 for r in rows)

    # A fresh registration: every link is there, except the flow run it was not registered in (and the commit outside a checkout).
    links = links_of(cfg, "m", "champion")
    in_checkout = (ROOT / ".git").exists()  # a folder in a clone, a file in a worktree
    assert list(links) == LINKS
    assert [what for what, link in links.items() if not link.exists] == ["Prefect flow run"] + ([] if in_checkout else ["code"])
    assert links["Prefect flow run"].detail == "missing: registered outside a flow run"
    assert (links["model version"].value, links["MLflow run"].value) == ("m v1", v1["run_id"])
    assert (links["Ray Train run"].value, links["checkpoint"].value) == ("train-test", str(first))
    manifest = read_manifest(Path(dataset))
    assert links["dataset"].value == manifest["fingerprint"] and links["dataset"].detail.startswith(f"{dataset}; ")
    assert links["dataset"].detail.endswith(f"checksum {manifest['source_checksum']}")
    assert links["resolved config"].detail == "the run's config/resolved.json hashes to the same"

    # The code it came from: the commit of this checkout and the installed package, on the version and on its run.
    tags = client.get_model_version("m", "1").tags
    assert client.get_run(v1["run_id"]).data.tags["git_sha"] == tags.get("git_sha")
    assert tags["package_version"] == importlib.metadata.version(DISTRIBUTION)
    if in_checkout:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        assert tags["git_sha"] in (head, f"{head}-dirty") and links["code"].value == tags["git_sha"]

    # The same from the command line.
    workspace = f"runtime.workdir={tmp_path / 'gan-work'}"
    code, out, _ = cli("models", "m", "--set", workspace)
    assert code == 0 and "m: 2 versions" in out and "challenger" in out and "60.00 ± 0.50" in out and v1["run_id"] in out
    code, out, _ = cli("models", "m", "--version", "1", "--set", workspace)
    assert code == 0 and "lineage of m v1" in out and "✗ missing: registered outside a flow run" in out
    assert out.count("✓ ") == len(LINKS) - 1 - (not in_checkout)
    assert cli("models", "n", "--set", workspace)[::2] == (2, "error: no registered model 'n'; registered models: m\n")

    # Gone or tampered with: each link says so.
    client.set_model_version_tag("m", "1", "config_hash", "0" * 16)
    shutil.rmtree(first)
    shutil.rmtree(dataset)
    client.delete_run(v1["run_id"])
    links = links_of(cfg, "m", "1")
    assert links["MLflow run"].detail == "missing: deleted from the tracking store (`mlflow runs restore` brings it back)"
    assert links["Ray Train run"].exists and links["checkpoint"].detail == "missing: no such folder"  # the run keeps v2's
    assert links["dataset"].detail == f"missing: no dataset with this fingerprint in {tmp_path / 'gan-work' / 'datasets'}"
    assert links["resolved config"].detail == f"does not match: the run's config/resolved.json hashes to {tags['config_hash']}"
    shutil.rmtree(second.parent)
    assert links_of(cfg, "m", "2")["Ray Train run"].detail == f"missing: no folder {second.parent}"
    with pytest.raises(UsageError, match="^m: no version '9'; registered versions: v1, v2; aliases: challenger = v2, champion = v1$"):
        chain(cfg, "m", "9")


def test_a_checkpoint_in_remote_storage_is_copied_into_the_workspace_beside_its_run_record(tmp_path: Path) -> None:
    """`ray.storage_path` a URI: the train stage hands on a local copy, which later stages and the lineage links read."""
    from ray.train import Checkpoint  # noqa: PLC0415

    from pipelines.cluster.fit import local_copy  # noqa: PLC0415

    remote = tmp_path / "store" / "train-x" / "checkpoint_000003"  # as Ray Train keeps it under file://<tmp_path>/store
    remote.mkdir(parents=True)
    (remote / STATE_FILE).write_bytes(b"state")
    (remote.parent / RAY_RUN_RECORD).write_text("{}")
    workspace = Workspace.of(str(tmp_path / "gan-work"))
    for _ in range(2):  # a second call (a cached stage's re-run) keeps the copy and refreshes the run's record
        copy = local_copy(Checkpoint(f"file://{remote}"), workspace, "train-x")
    assert copy == workspace.checkpoints / "train-x" / "checkpoint_000003"
    assert (copy / STATE_FILE).read_bytes() == b"state"
    assert sorted(p.name for p in copy.parent.iterdir()) == ["checkpoint_000003", RAY_RUN_RECORD]  # nothing left aside
    assert [(link.what, link.exists) for link in lineage.training_links(str(copy))] == [("Ray Train run", True), ("checkpoint", True)]


def test_prefect_link_says_why_a_flow_run_cannot_be_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    assert prefect_link("none").detail == "missing: registered outside a flow run"
    assert prefect_link("not-an-id").detail == "missing: not a flow-run id"
    api = f"http://127.0.0.1:{services.free_port()}/api"  # nothing listens there
    with temporary_settings(updates={PREFECT_API_URL: api}):
        unreachable = prefect_link(str(uuid4()), timeout=30)
        release = threading.Event()
        monkeypatch.setattr(lineage, "_read_flow_run", lambda _: release.wait(30))  # an API that never answers
        hung = prefect_link(str(uuid4()), timeout=0.5)
        release.set()
    assert not unreachable.exists and unreachable.detail.startswith(f"missing: the Prefect API at {api} is unreachable: ")
    assert hung.detail == f"missing: the Prefect API at {api} did not answer within 0.5 s"


@pytest.mark.integration
def test_prefect_link_finds_the_flow_run_and_its_page() -> None:
    """A real flow run on a temporary Prefect server: found, with its flow, state and UI address; an unknown id is not."""
    from prefect import flow  # noqa: PLC0415
    from prefect.runtime import flow_run  # noqa: PLC0415
    from prefect.settings import PREFECT_API_URL  # noqa: PLC0415
    from prefect.testing.utilities import prefect_test_harness  # noqa: PLC0415

    @flow(name="lineage-probe")
    def probe() -> str:
        return str(flow_run.id)

    with prefect_test_harness(server_startup_timeout=120):
        run_id = probe()
        found, unknown, api = prefect_link(run_id), prefect_link(str(uuid4())), PREFECT_API_URL.value()
    assert found.exists and found.detail.startswith("lineage-probe/") and ", Completed, started " in found.detail
    assert found.detail.endswith(f"; {api.removesuffix('/api')}/runs/flow-run/{run_id}")
    assert unknown.detail == f"missing: not found by the Prefect API at {api}"


def test_git_sha_names_the_commit_and_marks_changes_to_tracked_files(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    assert git_sha(repo) is None and commit_exists("0" * 40, repo) is None  # no checkout
    git("init", "-q")
    assert git_sha(repo) is None  # no commit yet
    (repo / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    (repo / "notes.txt").write_text("untracked files do not count\n")
    assert git_sha(repo) == head and commit_exists(head, repo) and commit_exists("0" * 40, repo) is False
    (repo / "a.py").write_text("x = 2\n")
    assert git_sha(repo) == f"{head}-dirty"
    (repo / "sub").mkdir()
    assert git_sha(repo / "sub") is None  # code inside someone else's repository (e.g. a venv's site-packages) is no checkout
