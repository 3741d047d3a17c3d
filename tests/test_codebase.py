"""Which code each stage keys on: comments and docstrings never count, an edit counts for the stages that run it and
for no other; on a small package written into a temporary folder, and on the project's own tree."""

import re
import textwrap
from pathlib import Path

import pytest

import gan
from pipelines import provenance
from pipelines.config import PipelineConfig
from pipelines.provenance import StageCode, code_rule, digest, project_modules, reach, stage_modules

# A worker that reaches `core` at import and `util` only through an import inside a function (a relative one);
# a driver that runs the worker and borrows from `evaluation`, which the worker never imports.
TREE = {
    "pkg/__init__.py": '"""A package."""\n',
    "pkg/core.py": '''
        """Core maths."""

        SCALE = 2  # the factor


        def scaled(x):
            """x times SCALE."""
            return x * SCALE
        ''',
    "pkg/util.py": "def helper():\n    return 1\n",
    "pkg/sub/__init__.py": "",
    "pkg/sub/leaf.py": "from .. import core\n\nVALUE = core.SCALE\n",
    "pkg/worker.py": '''
        import os

        import pkg.sub.leaf
        from pkg import core


        def run():
            from .util import helper

            return core.scaled(helper())
        ''',
    "pkg/evaluation.py": "from pkg.core import scaled\n\n\ndef score(x):\n    return scaled(x) + 1\n",
    "pkg/driver.py": "from pkg import evaluation, worker\n\nSTEPS = 10\nEPOCHS = Field(5, ge=1, description='passes over the data')\n",
}
WORKER = StageCode(("pkg.worker",))
TRAIN = StageCode(("pkg.worker",), alone=("pkg.driver",))
EVALUATE = StageCode(("pkg.evaluation",))


@pytest.fixture
def package(tmp_path: Path) -> Path:
    for name, text in TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text).lstrip())
    return tmp_path / "pkg"


def code_of(package: Path, stage: StageCode) -> str:
    modules = project_modules((package,))
    return digest(stage_modules(stage, modules), modules)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_modules_are_named_by_their_dotted_path(package: Path) -> None:
    assert set(project_modules((package,))) == {
        "pkg", "pkg.core", "pkg.util", "pkg.sub", "pkg.sub.leaf", "pkg.worker", "pkg.evaluation", "pkg.driver",
    }


def test_a_stage_reaches_what_its_modules_import_at_any_depth_and_their_packages(package: Path) -> None:
    """`import a.b.c` runs a and a.b first; `from a import b` runs submodule b; an import inside a function counts;
    a library's module (os) is no part of the project."""
    modules = project_modules((package,))
    assert reach(("pkg.worker",), modules) == {"pkg", "pkg.worker", "pkg.sub", "pkg.sub.leaf", "pkg.core", "pkg.util"}
    assert reach(("pkg.sub.leaf",), modules) == {"pkg", "pkg.sub", "pkg.sub.leaf", "pkg.core"}  # `from .. import core`
    # `alone`: the driver's own code, not the evaluation it imports.
    assert stage_modules(TRAIN, modules) == reach(("pkg.worker",), modules) | {"pkg.driver"}


def test_comments_docstrings_and_layout_do_not_change_the_code(package: Path) -> None:
    before = code_of(package, TRAIN)
    edit(package / "core.py", '"""Core maths."""', '"""Core maths, reworded."""\n# a new comment')
    edit(package / "core.py", "# the factor", "# the factor, as the paper has it")
    edit(package / "core.py", '"""x times SCALE."""', '"""Multiply x by SCALE:\n    twice as large."""\n\n')
    edit(package / "__init__.py", '"""A package."""', "# no docstring now")
    edit(package / "driver.py", "STEPS = 10", "STEPS = 10  # per epoch")
    edit(package / "driver.py", "description='passes over the data'", "description='passes over each worker shard'")  # help text
    assert code_of(package, TRAIN) == before
    edit(package / "driver.py", "Field(5,", "Field(6,")  # a default is code
    assert code_of(package, TRAIN) != before


def test_a_code_edit_counts_for_the_stages_that_run_it(package: Path) -> None:
    train, evaluate = code_of(package, TRAIN), code_of(package, EVALUATE)
    edit(package / "core.py", "SCALE = 2", "SCALE = 3")  # both stages run core
    assert code_of(package, TRAIN) != train and code_of(package, EVALUATE) != evaluate

    train = code_of(package, TRAIN)
    edit(package / "util.py", "return 1", "return 2")  # reached only through the import inside run()
    assert code_of(package, TRAIN) != train

    train = code_of(package, TRAIN)
    edit(package / "driver.py", "STEPS = 10", "STEPS = 20")  # the driver's own code
    assert code_of(package, TRAIN) != train

    train = code_of(package, TRAIN)
    edit(package / "core.py", "def scaled(x):", "def scaled(x):\n    '''Now a docstring.'''\n    assert x >= 0")
    assert code_of(package, TRAIN) != train  # a statement beside a docstring is code


def test_a_code_edit_elsewhere_leaves_a_stage_alone(package: Path) -> None:
    """Training imports the evaluation only from its driver, whose imports do not count: editing it changes the
    evaluation's code, not the training's."""
    train, evaluate = code_of(package, TRAIN), code_of(package, EVALUATE)
    edit(package / "evaluation.py", "+ 1", "+ 2")
    assert code_of(package, EVALUATE) != evaluate and code_of(package, TRAIN) == train
    evaluate = code_of(package, EVALUATE)
    edit(package / "util.py", "return 1", "return 2")  # the evaluation never imports util
    assert code_of(package, EVALUATE) == evaluate and code_of(package, TRAIN) != train


def test_the_training_keys_on_the_code_that_computes_the_weights() -> None:
    """On the project: the workers' code reaches the library's loop, networks and losses, and the driver counts, but not
    the evaluation, the registry, the console or the runtime, so editing those lets an unchanged training config resume."""
    modules = project_modules()
    train = stage_modules(code_rule("train"), modules)
    assert {"pipelines.cluster.worker", "pipelines.cluster.fit", "pipelines.stages.train", "gan.training_loop", "gan.loss",
            "gan.networks.dcgan", "gan.checkpoint"} <= train
    assert not {"pipelines.stages.evaluate", "pipelines.stages.register", "pipelines.console", "pipelines.workspace", "pipelines.flow",
                "pipelines.registry.client"} & train
    # It reads a dataset, never a source: no format reader, no writer (an edit there re-ingests, and the run resumes).
    assert "gan.data.reader" in train and not {m for m in train if m.startswith(("gan.data.formats", "gan.data.sources", "gan.data.writer"))}
    evaluate = stage_modules(code_rule("evaluate"), modules)
    assert {"pipelines.stages.evaluate", "pipelines.cluster.embed", "gan.metrics.fid", "gan.checkpoint"} <= evaluate
    assert not {"pipelines.stages.train", "pipelines.cluster.worker", "gan.training_loop", "pipelines.stages.register"} & evaluate
    assert "pipelines.stages.ingest" in stage_modules(code_rule("ingest"), modules)


def test_the_training_reaches_no_metric_only_the_evaluation_runs() -> None:
    """The training loop and the workers import the quick FID's modules only (gan.metrics imports nothing itself): an
    edit to KID, the k-NN metrics, memorisation, Inception or the evaluation protocol leaves the training's code alone."""
    modules = project_modules()
    evaluation_only = {f"gan.metrics.{name}" for name in (
        "kid", "precision_recall", "density_coverage", "memorisation", "inception", "inception_score", "extractors", "evaluation")}
    assert not evaluation_only & reach(("gan.training_loop",), modules)
    train = stage_modules(code_rule("train"), modules)
    assert "gan.metrics.quick_fid" in train and not evaluation_only & train


def test_every_stage_has_its_own_code_and_the_whole_code_has_the_package_version() -> None:
    codes = {stage: provenance.stage_code(stage) for stage in ("ingest", "train", "evaluate")}  # the cached stages
    assert all(re.fullmatch("[0-9a-f]{12}", code) for code in codes.values()) and len(set(codes.values())) == len(codes)
    version, _, whole = provenance.code_version().partition("+")
    assert version == gan.__version__ and re.fullmatch("[0-9a-f]{12}", whole) and whole not in codes.values()


def test_the_training_run_is_named_after_the_training_code_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same run name, so a re-run resumes, while only other stages' code changed; a new name once the training code did."""
    from pipelines.stages import train  # noqa: PLC0415 - imports Prefect and the worker's code

    cfg, manifest = PipelineConfig(), {"fingerprint": "data"}
    codes = {"ingest": "i1", "train": "t1", "evaluate": "e1"}
    monkeypatch.setattr(train, "stage_code", codes.get)
    name = train.run_name(cfg, manifest)
    codes.update(ingest="i2", evaluate="e2")
    assert train.run_name(cfg, manifest) == name
    codes.update(train="t2")
    assert train.run_name(cfg, manifest) != name


# What a change of each training setting does to the run (docs/pipeline.md, "When a stage reruns"): a weights setting names
# a new run (trained from step 0); a schedule or observation setting keeps the run's name, so the train stage, whose cache
# key carries it, runs again and continues the run from its latest checkpoint.
SCHEDULE_CHANGES = [
    "train.epochs=80", "train.max_minutes=9", "train.log_every_steps=10", "train.sample_every_steps=100", "train.num_sample_images=16",
    "train.checkpoint_every_epochs=2", "train.fid_every_epochs=2", "train.fid_samples=500", "train.watchdog=false",
    "train.max_rollbacks=1", "train.d_wins_fake=0.05", "train.d_wins_real=0.95", "train.d_wins_epochs=5", "train.collapse_ratio=0.1",
    "train.collapse_min_steps=10", "train.init_from=@champion", "train.init_missing=cold",
]
WEIGHT_CHANGES = [
    "train.loss=ns", "train.seed=1", "train.batch_size=32", "train.n_critic=2", "train.precision=bf16", "train.ema_decay=0.99",
    "train.cache_shard=false", "train.channels_last=true", "train.capture=auto", "train.gpu_batch_size=256", "optim.lr_g=0.0004", "reg.r1_gamma=1", "model.g_width=24", "ray.num_workers=1",
]


@pytest.mark.parametrize("change", SCHEDULE_CHANGES + WEIGHT_CHANGES)
def test_a_schedule_change_continues_the_run_and_a_weights_change_starts_another(change: str) -> None:
    from pipelines.config import load_config  # noqa: PLC0415
    from pipelines.stages import train  # noqa: PLC0415

    manifest = {"fingerprint": "data"}
    extra = ["train.init_from=@champion"] if change.startswith("train.init_missing") else []  # it acts only with init_from
    base, changed = load_config(None, extra), load_config(None, [*extra, change])
    same_run = train.run_name(changed, manifest) == train.run_name(base, manifest)
    assert same_run == (change in SCHEDULE_CHANGES), change
    if change in SCHEDULE_CHANGES and not change.startswith("train.init_"):  # how the parent is named is not a schedule
        assert train.schedule_key(changed) != train.schedule_key(base), change


def test_every_training_setting_is_a_schedule_or_a_weights_setting() -> None:
    from gan.config import SCHEDULE_KEYS, TrainConfig  # noqa: PLC0415

    assert SCHEDULE_KEYS <= TrainConfig.model_fields.keys()
    covered = {c.split("=")[0].split(".")[1] for c in SCHEDULE_CHANGES if c.startswith("train.")}
    assert covered == SCHEDULE_KEYS - {"init_budget"}  # init_budget acts only with a parent, which the run name names
