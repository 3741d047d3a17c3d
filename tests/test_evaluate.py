"""The evaluate stage's caches: what names an evaluation, and the training images' features kept between evaluations."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.data.reader import load_split
from gan.data.rows import Source
from gan.data.writer import write_dataset
from gan.metrics.classes import class_histogram
from gan.metrics.classifier import Classifier
from gan.metrics.evaluation import Reference
from gan.metrics.extractors import Extractor, build_extractor
from pipelines import yardstick
from pipelines.config import load_config
from pipelines.stages import evaluate
from pipelines.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")


def evaluation_folder(cfg, monkeypatch: pytest.MonkeyPatch, dataset_dir: Path) -> Path:  # noqa: ANN001
    """The folder `evaluate` would write its report into (the scoring itself left out)."""
    folders = []
    monkeypatch.setattr(evaluate, "write_report", lambda cfg, dataset_dir, checkpoint_dir, out, bar: folders.append(out))
    evaluate.evaluate(cfg, str(dataset_dir), "checkpoint")
    return folders[0]


def test_inception_weights_replaced_in_place_are_not_answered_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"first weights")
    inception = ["eval.feature_extractor=inception", "eval.num_samples=5000", f"eval.inception_weights={weights}"]
    cfg = load_config(None, [f"runtime.workdir={tmp_path / 'work'}", *inception])
    folder, _ = dataset(tmp_path, 100)
    params = {"cfg": cfg, "checkpoint_dir": "checkpoint", "dataset_dir": str(folder)}
    first = evaluate._key(None, params), evaluation_folder(cfg, monkeypatch, folder)
    assert (evaluate._key(None, params), evaluation_folder(cfg, monkeypatch, folder)) == first  # the same bytes: the same evaluation
    weights.write_bytes(b"other weights")  # same path, same config
    second = evaluate._key(None, params), evaluation_folder(cfg, monkeypatch, folder)
    assert second[0] != first[0] and second[1] != first[1]
    # The bytes name the network, not the path: a copy elsewhere is the same evaluation.
    (tmp_path / "copy.pth").write_bytes(b"other weights")
    copy = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"inception_weights": str(tmp_path / "copy.pth")})})
    assert evaluate._key(None, {**params, "cfg": copy}) == second[0]


def test_the_same_checkpoint_measured_against_other_data_is_another_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(None, [f"runtime.workdir={tmp_path / 'work'}"])
    (one, _), (other, _) = dataset(tmp_path / "one", 100), dataset(tmp_path / "other", 120)
    keys = [evaluate._key(None, {"cfg": cfg, "checkpoint_dir": "checkpoint", "dataset_dir": str(d)}) for d in (one, other)]
    assert keys[0] != keys[1] and evaluation_folder(cfg, monkeypatch, one) != evaluation_folder(cfg, monkeypatch, other)


def dataset(tmp_path: Path, count: int) -> tuple[Path, dict]:
    """A dataset of `count` random 8x8 images in ten classes (a fifth held out) and its manifest."""
    rng = np.random.default_rng(0)
    source = Source(rng.integers(0, 256, (count, 1, 8, 8), dtype=np.uint8), np.arange(count) % 10, "random")
    return tmp_path / "ds", write_dataset(source, tmp_path / "ds", 0.2, 0, "x")


def instrument(extractor: Extractor, classifier: Classifier, reference: Reference) -> yardstick.Instrument:
    """A yardstick of 200 samples (seed 0) on 8x8 images in ten classes, drawn evenly."""
    measure = yardstick.Yardstick(extractor.key, "d" * 64, 200, 0, (1, 8, 8), tuple(map(str, range(10))))
    return yardstick.Instrument(measure, extractor, classifier, reference, np.full(10, 0.1))


def test_training_features_are_embedded_once_per_extractor_and_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    cfg = load_config(None, [f"runtime.workdir={tmp_path}"])
    classifier = Classifier((1, 8, 8), 10)
    extractor = build_extractor("classifier", classifier=classifier, classifier_key="c1", inception_weights=None)
    folder, manifest = dataset(tmp_path, 375)
    train, _ = load_split(folder, "train")
    fake = np.random.default_rng(1).integers(0, 256, (200, 1, 8, 8), dtype=np.uint8)
    embedded = []

    def counted(extractor: Extractor, images: np.ndarray, min_images: int) -> tuple[np.ndarray, np.ndarray]:
        embedded.append(len(images))
        return extractor.embed(images)

    monkeypatch.setattr(yardstick, "embed_images", counted)

    first = yardstick.reference_of(cfg, extractor, classifier, "c1", manifest, folder)
    again = yardstick.reference_of(cfg, extractor, classifier, "c1", manifest, folder)
    assert embedded == [300]  # the second evaluation loaded the features
    (kept,) = Workspace.of(cfg.runtime.workdir).features.iterdir()
    assert np.load(kept / "feats.npy").dtype == np.float32  # as the network computed them: half the file
    feats, probs = extractor.embed(train)
    assert (first.feats == feats).all() and (again.feats == feats).all() and (again.hist == class_histogram(probs)).all()
    samples = yardstick.embed(extractor, classifier, fake, cfg.eval.ray_embed_min_images)
    embedded_now = Reference.of(feats, class_histogram(probs))
    scores = [instrument(extractor, classifier, reference).score(samples, 0.01) for reference in (first, again, embedded_now)]
    assert scores[0] == scores[1] == scores[2]

    # Another extractor, or another dataset, is embedded anew.
    embedded.clear()
    yardstick.reference_of(cfg, dataclasses.replace(extractor, key="c2"), classifier, "c1", manifest, folder)
    yardstick.reference_of(cfg, extractor, classifier, "c1", {**manifest, "fingerprint": "0" * 64}, folder)
    assert embedded == [300, 300]
    assert len(list(Workspace.of(cfg.runtime.workdir).features.iterdir())) == 3


def test_the_evaluation_holds_a_bounded_sample_of_a_large_training_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """eval.train_sample bounds what the evaluation holds: the reference is a seeded sample of that many training rows,
    named in the cache keys; a sample as large as the split is the whole split, under the keys it always had."""
    folder, manifest = dataset(tmp_path, 375)
    train, _ = load_split(folder, "train")
    classifier = Classifier((1, 8, 8), 10)
    extractor = build_extractor("classifier", classifier=classifier, classifier_key="c1", inception_weights=None)
    embedded = []
    monkeypatch.setattr(yardstick, "embed_images", lambda extractor, images, _: (embedded.append(images.copy()), extractor.embed(images))[1])
    configs = {size: load_config(None, [f"runtime.workdir={tmp_path / 'work'}", f"eval.train_sample={size}"])
               for size in (0, 300, 1000, 120)}
    keys = {size: yardstick.feature_extractor_key(cfg, manifest) for size, cfg in configs.items()}
    assert keys[0] == keys[300] == keys[1000] != keys[120]

    whole = yardstick.reference_of(configs[300], extractor, classifier, "c1", manifest, folder)
    sample = yardstick.reference_of(configs[120], extractor, classifier, "c1", manifest, folder)
    assert len(whole.feats) == 300 and len(sample.feats) == 120
    rows = yardstick.train_rows(configs[120], manifest)
    assert len(set(rows.tolist())) == 120 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(embedded[1], train[rows])  # exactly those rows, read from disk
    assert yardstick.reference_of(configs[1000], extractor, classifier, "c1", manifest, folder).feats.shape == whole.feats.shape
    assert len(embedded) == 2  # the whole split's features served both 300 and 1000
