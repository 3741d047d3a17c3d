"""The evaluate stage's caches: what names an evaluation, and the training images' features kept between evaluations."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from gan import metrics
from pipelines import evaluate
from pipelines.config import load_config
from pipelines.runtime import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")


def evaluation_folder(cfg, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: ANN001
    """The folder `evaluate` would write its report into (the scoring itself left out)."""
    folders = []
    monkeypatch.setattr(evaluate, "write_report", lambda cfg, dataset_dir, checkpoint_dir, out, bar: folders.append(out))
    evaluate.evaluate(cfg, "dataset", "checkpoint")
    return folders[0]


def test_inception_weights_replaced_in_place_are_not_answered_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"first weights")
    inception = ["eval.feature_extractor=inception", "eval.num_samples=5000", f"eval.inception_weights={weights}"]
    cfg = load_config(None, [f"runtime.workdir={tmp_path / 'work'}", *inception])
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


def test_training_features_are_embedded_once_per_extractor_and_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    cfg = load_config(None, [f"runtime.workdir={tmp_path}"])
    classifier = metrics.Classifier((1, 8, 8), 10)
    extractor = metrics.build_extractor("classifier", classifier=classifier, classifier_key="c1", inception_weights=None)
    rng = np.random.default_rng(0)
    train, fake = (rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8) for n in (300, 200))
    embedded = []

    def counted(extractor: metrics.Extractor, images: np.ndarray, min_images: int) -> tuple[np.ndarray, np.ndarray]:
        embedded.append(len(images))
        return extractor.embed(images)

    monkeypatch.setattr(evaluate, "embed_images", counted)
    manifest = {"fingerprint": "f" * 64}

    first = evaluate.reference_of(cfg, extractor, classifier, "c1", manifest, train)
    again = evaluate.reference_of(cfg, extractor, classifier, "c1", manifest, train)
    assert embedded == [300]  # the second evaluation loaded the features
    (folder,) = Workspace.of(cfg.runtime.workdir).features.iterdir()
    assert np.load(folder / "feats.npy").dtype == np.float32  # as the network computed them: half the file
    feats, probs = extractor.embed(train)
    assert (first.feats == feats).all() and (again.feats == feats).all() and (again.hist == metrics.class_histogram(probs)).all()
    samples = evaluate.embed_set(extractor, classifier, fake, cfg)
    assert evaluate.scores_of(samples, again, cfg) == evaluate.scores_of(samples, first, cfg)
    embedded_now = metrics.Reference.of(feats, metrics.class_histogram(probs))
    assert evaluate.scores_of(samples, again, cfg) == evaluate.scores_of(samples, embedded_now, cfg)

    # Another extractor, or another dataset, is embedded anew.
    embedded.clear()
    evaluate.reference_of(cfg, dataclasses.replace(extractor, key="c2"), classifier, "c1", manifest, train)
    evaluate.reference_of(cfg, extractor, classifier, "c1", {"fingerprint": "0" * 64}, train)
    assert embedded == [300, 300]
    assert len(list(Workspace.of(cfg.runtime.workdir).features.iterdir())) == 3
