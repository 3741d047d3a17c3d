"""The evaluate stage's caches: what names an evaluation, and the training images' features kept between evaluations."""

from pathlib import Path

import pytest

from pipelines import evaluate
from pipelines.config import load_config


def evaluation_folder(cfg, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: ANN001
    """The folder `evaluate` would write its report into (the scoring itself left out)."""
    folders = []
    monkeypatch.setattr(evaluate, "write_report", lambda cfg, dataset_dir, checkpoint_dir, out, bar: folders.append(out))
    evaluate.evaluate(cfg, "dataset", "checkpoint")
    return folders[0]


def test_inception_weights_replaced_in_place_are_not_answered_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"first weights")
    cfg = load_config(None, [
        f"runtime.workdir={tmp_path / 'work'}", "eval.feature_extractor=inception", "eval.num_samples=5000", f"eval.inception_weights={weights}",
    ])
    params = {"cfg": cfg, "checkpoint_dir": "checkpoint"}
    first = evaluate._key(None, params), evaluation_folder(cfg, monkeypatch)
    assert (evaluate._key(None, params), evaluation_folder(cfg, monkeypatch)) == first  # the same bytes: the same evaluation
    weights.write_bytes(b"other weights")  # same path, same config
    second = evaluate._key(None, params), evaluation_folder(cfg, monkeypatch)
    assert second[0] != first[0] and second[1] != first[1]
    # The bytes name the network, not the path: a copy elsewhere is the same evaluation.
    (tmp_path / "copy.pth").write_bytes(b"other weights")
    copy = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"inception_weights": str(tmp_path / "copy.pth")})})
    assert evaluate._key(None, {"cfg": copy, "checkpoint_dir": "checkpoint"}) == second[0]
