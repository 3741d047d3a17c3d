"""Config: defaults once, YAML and --set override, and bad values fail with the key, value and what is allowed."""

from pathlib import Path

import pytest

from pipelines.config import ConfigError, PipelineConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_load() -> None:
    assert load_config(ROOT / "conf" / "pipeline.yaml").model.arch == "dcgan"
    smoke = load_config(ROOT / "conf" / "smoke.yaml")
    assert smoke.model.arch == "mlp" and smoke.ray.num_workers == 2


def test_overrides_apply_after_the_file_with_yaml_typing() -> None:
    cfg = load_config(ROOT / "conf" / "smoke.yaml", ["train.epochs=7", "ray.use_gpu=true", "model.g_hidden=[32, 64]"])
    assert cfg.train.epochs == 7 and cfg.ray.use_gpu is True and cfg.model.g_hidden == [32, 64]
    assert cfg.train.lr_g == PipelineConfig().train.lr_g  # untouched keys keep the one default


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr_g=-1", "train.lr_g = -1 (--set): Input should be greater than 0"),
        ("train.epochs=many", "train.epochs = 'many' (--set): Input should be a valid integer"),
        ("train.epoch=3", "train.epoch = 3 (--set): unknown key; allowed here: batch_size,"),
        ("model.arch=gru", "model.arch = 'gru' (--set): Input should be 'mlp' or 'dcgan'"),
        ("trainer.epochs=3", "trainer = {'epochs': 3} (--set): unknown key; allowed here: data, eval, model"),
    ],
)
def test_bad_values_name_key_value_and_rule(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


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
