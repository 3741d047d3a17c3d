"""Presets end to end, smoke-sized, with the real Ray, Prefect and MLflow: `gan-pipeline compare` runs the
pipeline once per preset in one command, each registers under its own name, and conditional and InfoGAN
champions sample by label and by code in fresh processes. One preset of each kind of model (unconditional,
conditional: the default recipe, InfoGAN); every preset's recipe trains, checkpoints and samples in
tests/test_training_loop.py, and every loss and model kind trains under DDP in tests/test_ddp.py."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.test_pipeline import cli, registry

pytestmark = pytest.mark.integration

PRESETS = ("dcgan", "recommended", "infogan")
# 8x8 digits, one short epoch, narrow networks: every code path, none of the cost. One epoch does not draw digits
# yet: the evaluation's collapse gate is off here (tests/test_resume.py has it on).
SMOKE = [
    "data.source=bundled-digits", "train.epochs=1", "train.max_minutes=0", "train.batch_size=32", "train.fid_every_epochs=1",
    "train.log_every_steps=5", "train.sample_every_steps=10", "model.g_width=8", "model.d_width=8",
    "eval.num_samples=200", "eval.classifier_epochs=1", "eval.collapse_ratio=0", "ray.num_workers=2", "ray.max_failures=0", "registry.model_name=smoke",
]


def sets(*overrides: str) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("presets")
    done = cli(workdir, "compare", "--presets", ",".join(PRESETS), *sets(*SMOKE), timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    folder = Path(done.stdout.strip().splitlines()[-1].rsplit(" in ", 1)[1])
    return {"workdir": workdir, "folder": folder, "rows": json.loads((folder / "results.json").read_text()), "stdout": done.stdout}


def test_every_preset_trained_evaluated_and_registered_under_its_own_name(compared: dict) -> None:
    rows = {r["preset"]: r for r in compared["rows"]}
    assert tuple(rows) == PRESETS
    client = registry(compared["workdir"])
    for name, row in rows.items():
        assert math.isfinite(row["fid"]) and row["fid"] > 0 and row["steps"] > 0, name
        assert row["quick_fid"] and all(math.isfinite(q["fid"]) for q in row["quick_fid"]), name
        champion = client.get_model_version_by_alias(f"smoke-{name}", "champion")
        assert champion.tags["preset"] == name
        assert f"| {name} |" in compared["stdout"]
    listed = {name: {line["name"]: line["value"] for line in row["metrics"]} for name, row in rows.items()}  # the report's metrics
    assert "conditional" in listed["recommended"] and "conditional" not in listed["dcgan"]  # the worst label's accuracy
    assert listed["infogan"]["infogan"] >= 0.1  # code-class agreement: at least chance
    for picture in ("samples.png", "time_to_quality.png"):
        assert Image.open(compared["folder"] / picture).size[0] > 100


def test_run_with_a_preset_reuses_the_comparisons_stages(compared: dict) -> None:
    done = cli(compared["workdir"], "run", "--preset", "recommended", *sets(*SMOKE, "registry.model_name=smoke-recommended"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(Path(done.stdout.strip().splitlines()[-1].split("summary: ")[1]).read_text())
    assert [summary["stages"][s]["status"] for s in ("ingest", "train", "evaluate")] == ["cached"] * 3


def test_conditional_champion_draws_the_label_asked_for_in_a_fresh_process(compared: dict) -> None:
    workdir = compared["workdir"]
    done = cli(workdir, "sample", "--model", "models:/smoke-recommended@champion", "--label", "7", "-n", "8", "--out", "seven.png")
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(workdir / "seven.png").size == ((8 * 10 + 2) * 2, (10 + 2) * 2)  # one row of 8 tiles of 8 px
    done = cli(workdir, "sample", "--model", "models:/smoke-recommended@champion", "--per-class", "--out", "rows.png")
    assert done.returncode == 0 and Image.open(workdir / "rows.png").size == ((10 * 10 + 2) * 2,) * 2  # 10 classes x 10
    probe = (
        "import mlflow, numpy as np; "
        f"mlflow.set_tracking_uri('sqlite:///{workdir / 'gan-work' / 'mlflow.db'}'); "
        "m = mlflow.pyfunc.load_model('models:/smoke-recommended@champion'); "
        "z = np.random.default_rng(0).standard_normal((6, 100)).astype(np.float32); "
        "print(m.predict({'z': z, 'label': np.arange(6, dtype=np.int64)}).shape, [i.name for i in m.metadata.get_input_schema().inputs])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=workdir)
    assert out.stdout.strip().splitlines()[-1] == "(6, 1, 8, 8) ['z', 'label']", out.stderr[-2000:]


def test_infogan_champion_draws_the_code_figure_in_a_fresh_process(compared: dict) -> None:
    workdir = compared["workdir"]
    done = cli(workdir, "sample", "--model", "models:/smoke-infogan@champion", "--per-class", "--out", "codes.png")
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(workdir / "codes.png").size == ((10 * 10 + 2) * 2,) * 2  # 10 codes x 10 steps of a continuous code
    report_path = Path(next(r for r in compared["rows"] if r["preset"] == "infogan")["report"])
    assert len(json.loads(report_path.read_text())["infogan"]["code_to_class"]) == 10
    assert (report_path.parent / "infogan_codes.png").is_file()  # the same figure, logged to MLflow with the evaluation


def test_sampling_options_the_model_cannot_honour_fail_clearly(compared: dict) -> None:
    workdir = compared["workdir"]
    cases = [
        (["--model", "models:/smoke-dcgan@champion", "--label", "3"], "is not a conditional model; it takes no label"),
        (["--model", "models:/smoke-recommended@champion", "--label", "12"], "knows classes 0..9"),
        (["--model", "models:/smoke-dcgan@champion", "--per-class"], "is unconditional and has no categorical code"),
    ]
    for args, message in cases:
        done = cli(workdir, "sample", *args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr[-1500:])
