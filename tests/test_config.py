"""Config: defaults once, YAML and --set override, and bad values fail with the key, value and what is allowed."""

import re
from pathlib import Path

import pytest

from gan.config import Recipe, check_recipe
from pipelines.config import ConfigError, PRESETS_DIR, PipelineConfig, load_config, preset_path, shard_loader

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_load() -> None:
    assert load_config(ROOT / "conf" / "pipeline.yaml").model.arch == "dcgan"
    smoke = load_config(ROOT / "conf" / "smoke.yaml")
    assert smoke.model.arch == "mlp" and smoke.ray.num_workers == 2


def test_overrides_apply_after_the_file_with_yaml_typing() -> None:
    cfg = load_config(ROOT / "conf" / "smoke.yaml", ["train.epochs=7", "ray.use_gpu=true", "model.g_hidden=[32, 64]"])
    assert cfg.train.epochs == 7 and cfg.ray.use_gpu is True and cfg.model.g_hidden == [32, 64]
    assert cfg.eval.seed == PipelineConfig().eval.seed  # untouched keys keep the one default


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lr_g=-1", "optim.lr_g = -1 (--set): Input should be greater than 0"),
        ("train.epochs=many", "train.epochs = 'many' (--set): Input should be a valid integer"),
        ("train.epoch=3", "train.epoch = 3 (--set): unknown key; allowed here: batch_size,"),
        ("model.arch=gru", "model.arch = 'gru' (--set): Input should be 'mlp', 'dcgan' or 'resnet'"),
        ("train.loss=wgangp", "train.loss = 'wgangp' (--set): Input should be 'minimax', 'ns', 'hinge', 'lsgan', 'wgan' or 'wgan-gp'"),
        ("reg.diffaugment=flip", "reg.diffaugment = 'flip' (--set): Value error, unknown augmentation flip; allowed: translation, cutout, color"),
        ("eval.feature_extractor=vgg",
         "eval.feature_extractor = 'vgg' (--set): Input should be 'auto', 'classifier', 'selfsupervised' or 'inception'"),
        ("trainer.epochs=3", "trainer = {'epochs': 3} (--set): unknown key; allowed here: data, eval, model, optim, ray, reg"),
        ("ray.storage_path=ftp://host/x", "ray.storage_path = 'ftp://host/x' (--set): Value error, unknown storage URI scheme 'ftp'; "
         "allowed: file, s3, gs, gcs, hdfs, viewfs, or a local path"),
        ("ray.storage_path=s3://", "ray.storage_path = 's3://' (--set): Value error, s3:// names no bucket or folder"),
        ("ray.storage_path=file://shared/x", "ray.storage_path = 'file://shared/x' (--set): Value error, a file:// URI needs an absolute path"),
    ],
)
def test_bad_values_name_key_value_and_rule(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["", "shared/ray", "/mnt/shared/ray", "s3://bucket/gan", "gs://bucket", "file:///mnt/shared/ray"])
def test_storage_path_takes_a_local_path_or_a_pyarrow_uri(value: str, tmp_path: Path) -> None:
    from pipelines.workspace import Workspace, ray_storage  # noqa: PLC0415

    cfg = load_config(None, [f"ray.storage_path={value}"] if value else [])
    storage = ray_storage(cfg.ray.storage_path, Workspace(tmp_path))
    assert storage == (str(tmp_path / "ray_results") if not value else value if "://" in value else str(Path(value).resolve()))


def test_bad_file_values_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("eval:\n  num_samples: 3\n")
    with pytest.raises(ConfigError, match=r"eval.num_samples = 3 \(.*bad.yaml\): Input should be greater than or equal to 10"):
        load_config(path)


@pytest.mark.parametrize(("text", "expected"), [("[1, 2", "not valid YAML"), ("- a\n- b\n", "expected a mapping")])
def test_malformed_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_missing_file_and_malformed_override() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/no/such.yaml")
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["epochs=3"])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["reg.label_smoothing=0.1", "train.loss=hinge"], "reg.label_smoothing = 0.1 needs a cross-entropy loss (minimax, ns)"),
        (["train.clip_value=0.05"], "train.clip_value = 0.05 acts only with train.loss 'wgan'; it would do nothing here"),
        (["train.gp_weight=5", "train.loss=wgan"], "train.gp_weight = 5.0 acts only with train.loss 'wgan-gp'"),
        (["reg.r1_every=4"], "reg.r1_every = 4 acts only with reg.r1_gamma > 0"),
        (["optim.optimizer=rmsprop", "optim.beta1=0.5"], "optim.beta1 = 0.5 acts only with optim.optimizer 'adam'"),
        (["optim.schedule=constant", "optim.decay_start=0.2"], "optim.decay_start = 0.2 acts only with optim.schedule 'linear'"),
        (["reg.info_weight=2"], "reg.info_weight = 2.0 acts only with InfoGAN codes (model.info_*)"),
        (["train.loss=wgan", "model.spectral_norm=false", "reg.r1_gamma=1"], "the lazy R1 step would leave D's weights unclipped"),
        (["model.conditional=true", "model.info_categorical=10"], "model.conditional = true and model.info_categorical = 10, model.info_continuous = 0: class labels and InfoGAN codes exclude each other"),
        (["train.loss=wgan", "model.spectral_norm=true"], "clips D's weights, which fights model.spectral_norm"),
    ],
)
def test_contradicting_settings_fail_at_load_with_the_reason(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(None, overrides)


def test_settings_that_contradict_the_data_fail_before_training() -> None:
    recipe = load_config(None, ["reg.diffaugment=color,translation"]).recipe
    check_recipe(recipe, (3, 32, 32))
    with pytest.raises(ConfigError, match=r"'color' needs RGB images; the data has 1 channel"):
        check_recipe(recipe, (1, 28, 28))
    with pytest.raises(ConfigError, match=r"halves the image at least twice.*\(1, 10, 10\)"):
        check_recipe(load_config(None, []).recipe, (1, 10, 10))
    with pytest.raises(ConfigError, match=r"augments images; the data are vectors \(2,\)"):
        check_recipe(load_config(None, ["model.arch=mlp", "reg.diffaugment=translation"]).recipe, (2,))


def test_every_preset_loads_and_later_files_override_earlier_ones(tmp_path: Path) -> None:
    presets = sorted(PRESETS_DIR.glob("*.yaml"))
    assert {p.stem for p in presets} >= {"article-mlp", "dcgan", "wgan", "wgan-gp", "sngan-hinge", "cgan", "infogan", "recommended"}
    for path in presets:
        load_config(path)
    override = tmp_path / "o.yaml"
    override.write_text("train:\n  epochs: 3\n")
    cfg = load_config([preset_path("wgan"), override])
    assert cfg.train.epochs == 3 and cfg.train.loss == "wgan"  # the preset's other train keys survive


def test_default_config_is_the_recommended_recipe() -> None:
    recommended = load_config(preset_path("recommended")).recipe
    assert recommended == Recipe()  # the preset spells out the library's defaults
    default_run = load_config(ROOT / "conf" / "pipeline.yaml").recipe
    # The default run adds a time budget that decides its steps (train.epochs raised to a cap it never reaches), nothing else.
    assert default_run.train.max_minutes > 0 and default_run.train.epochs > recommended.train.epochs
    unbudgeted = default_run.train.model_copy(update={"max_minutes": 0.0, "epochs": recommended.train.epochs})
    assert default_run.model_copy(update={"train": unbudgeted}) == recommended


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="preset 'nope' does not exist; known presets: article-mlp, cgan"):
        preset_path("nope")


def test_workers_that_leave_ray_data_no_cpu_are_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.stages.ingest import check_local_cpus

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    check_local_cpus(load_config(overrides=["ray.num_workers=1", "ray.cpus_per_worker=1"]))
    check_local_cpus(load_config(overrides=["ray.num_workers=2", "ray.cpus_per_worker=0.5"]))
    streamed = ["ray.loader=ray-data"]
    with pytest.raises(ConfigError, match=r"ray.num_workers x ray.cpus_per_worker = 2 x 1.0 reserves 2 of this machine's 2 CPUs; at most 1"):
        check_local_cpus(load_config(overrides=["ray.num_workers=2", "ray.cpus_per_worker=1", *streamed]))
    with pytest.raises(ConfigError, match=r"2 x 1.0 reserves 2"):
        check_local_cpus(load_config(overrides=["ray.num_workers=2", "ray.cpus_per_worker=1", "train.cache_shard=false"]))
    check_local_cpus(load_config(overrides=["ray.num_workers=2", "ray.cpus_per_worker=1"]))  # workers that read Parquet themselves
    with pytest.raises(ConfigError, match=r"2 x 1.5 reserves 3 of this machine's 2 CPUs; at most 2 may go to workers: lower"):
        check_local_cpus(load_config(overrides=["ray.num_workers=2", "ray.cpus_per_worker=1.5"]))  # more than the machine has
    monkeypatch.setenv("RAY_ADDRESS", "ray://cluster:10001")  # a cluster's CPUs are not this machine's
    check_local_cpus(load_config(overrides=["ray.num_workers=2", "ray.cpus_per_worker=1", *streamed]))


def test_the_parquet_loader_cannot_stream() -> None:
    assert shard_loader(load_config()) == "parquet" and shard_loader(load_config(overrides=["train.cache_shard=false"])) == "ray-data"
    assert shard_loader(load_config(overrides=["ray.loader=ray-data"])) == "ray-data"
    with pytest.raises(ConfigError, match="ray.loader = 'parquet' keeps each worker's rows in memory, but train.cache_shard = false"):
        load_config(overrides=["ray.loader=parquet", "train.cache_shard=false"])


def test_inception_extractor_needs_a_readable_weights_file_and_enough_samples(tmp_path: Path) -> None:
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"weights")
    inception = ["eval.feature_extractor=inception", "eval.num_samples=5000"]
    cfg = load_config(None, [*inception, f"eval.inception_weights={weights}"])
    assert cfg.eval.feature_extractor == "inception" and cfg.eval.inception_weights == str(weights)
    needs = "eval.feature_extractor 'inception' needs pytorch-fid's pt_inception-2015-12-05-6726825d.pth there (nothing is downloaded)"
    gone = tmp_path / "gone.pth"
    cases = [
        ([], f"config error: eval.inception_weights = None: no path given; {needs}"),
        ([f"eval.inception_weights={gone}"], f"config error: eval.inception_weights = '{gone}': no such file; {needs}"),
        ([f"eval.inception_weights={tmp_path}"], f"config error: eval.inception_weights = '{tmp_path}': not a file; {needs}"),
        (
            [f"eval.inception_weights={weights}", "eval.num_samples=2048"],
            "config error: eval.num_samples = 2048 with eval.feature_extractor 'inception': FID needs more samples than its 2048 "
            "feature dimensions; at least 2049",
        ),
    ]
    for overrides, expected in cases:
        with pytest.raises(ConfigError) as err:
            load_config(None, [*inception, *overrides])
        assert str(err.value) == expected
    for other in ("classifier", "selfsupervised"):
        with pytest.raises(ConfigError) as err:
            load_config(None, [f"eval.feature_extractor={other}", f"eval.inception_weights={weights}"])
        assert str(err.value) == (f"config error: eval.inception_weights = '{weights}' acts only with eval.feature_extractor 'inception' "
                                  f"or 'auto', not {other!r}; it would do nothing here")
    # 'auto' (the default) takes given weights as the choice of Inception, with its rules
    assert load_config(None, [f"eval.inception_weights={weights}", "eval.num_samples=5000"]).eval.inception_weights == str(weights)
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"eval.inception_weights={weights}"])
    assert str(err.value) == (
        "config error: eval.num_samples = 1000 with eval.feature_extractor 'auto' (Inception, as eval.inception_weights is given): FID "
        "needs more samples than its 2048 feature dimensions; at least 2049"
    )


@pytest.mark.parametrize(
    ("settings", "classes", "chosen"),
    [
        ({}, 10, "classifier"),  # the bundled digits keep the classifier's yardstick
        ({}, 2, "selfsupervised"),
        ({}, 1, "selfsupervised"),  # unlabelled data: one class
        ({"min_classes": 2}, 2, "classifier"),
        ({"inception_weights": "w.pth"}, 2, "inception"),
        ({"feature_extractor": "classifier"}, 2, "classifier"),
        ({"feature_extractor": "selfsupervised"}, 10, "selfsupervised"),
    ],
)
def test_auto_picks_the_classifier_for_many_classes_and_the_encoder_for_few(settings: dict, classes: int, chosen: str) -> None:
    from gan.config import EvalConfig, chosen_extractor  # noqa: PLC0415

    name, reason = chosen_extractor(EvalConfig(**settings), classes)
    assert name == chosen and reason
    if name == "selfsupervised" and not settings:
        assert reason.startswith(f"{classes} class") and "< eval.min_classes 10" in reason


def test_the_extractor_choices_are_the_extractors_table_and_auto() -> None:
    """The config's Literal (the config imports no torch) names exactly the rows of EXTRACTORS, and 'auto'."""
    from typing import get_args  # noqa: PLC0415

    from gan.config import EvalConfig  # noqa: PLC0415
    from gan.metrics.extractors import EXTRACTORS  # noqa: PLC0415

    choices = get_args(EvalConfig.model_fields["feature_extractor"].annotation)
    assert set(choices) == {"auto", *EXTRACTORS}


def test_the_choices_of_arch_and_loss_are_their_tables_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """A row of ARCHS or LOSSES is an allowed value at once: no second list to keep equal."""
    from gan import networks, objectives  # noqa: PLC0415
    from gan.choices import CHOICES, check_choices  # noqa: PLC0415

    assert CHOICES["model.arch"][1] is networks.ARCHS and CHOICES["train.loss"][1] is objectives.LOSSES
    with pytest.raises(ConfigError, match=r"^config error: model.arch = 'tiny' \(--set\): Input should be 'mlp', 'dcgan' or 'resnet'$"):
        load_config(None, ["model.arch=tiny"])
    monkeypatch.setitem(networks.ARCHS, "tiny", networks.ARCHS["mlp"])
    assert load_config(None, ["model.arch=tiny"]).model.arch == "tiny"
    with pytest.raises(ConfigError, match=r"^config error: train.loss = 'nope': Input should be 'minimax', .* or 'wgan-gp'$"):
        check_choices(Recipe.model_validate({"train": {"loss": "nope"}}))  # the library's own check, as train() runs it


def test_ray_use_gpu_asks_each_worker_for_a_gpu_and_leaves_its_threads_alone() -> None:
    """The GPU path's plumbing, checked on CPU: what `fit` hands Ray Train for each worker."""
    from pipelines.cluster.fit import CPU_WORKER_ENV, worker_env, worker_resources  # noqa: PLC0415

    gpu = load_config(None, ["ray.use_gpu=true", "ray.cpus_per_worker=2", "ray.worker_resources={gpu_node: 1}"])
    assert worker_resources(gpu) == {"CPU": 2.0, "GPU": 1, "gpu_node": 1} and worker_env(gpu) == {}
    cpu = load_config(None, [])
    assert "GPU" not in worker_resources(cpu) and worker_env(cpu) == CPU_WORKER_ENV
