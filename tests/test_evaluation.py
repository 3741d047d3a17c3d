"""The evaluation protocol (gan/metrics/evaluation.py) on scikit-learn's 8x8 digits: a generator that hands back real
images scores at the real-vs-real floor and one of noise far above it; the report holds exactly the metrics it is
asked for, and a metric registered and named is in every summary without another edit."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gan.config import EvalConfig
from gan.data.sources import load_source
from gan.latent import Latent
from gan.metrics import evaluation, registry
from gan.metrics.classes import class_histogram
from gan.metrics.classifier import to_float, train_classifier
from gan.metrics.extractors import build_extractor
from gan.metrics.registry import Shown, register

pytestmark = pytest.mark.usefixtures("one_thread")

N = 300  # samples and held-out images: more than the classifier's 128 feature dimensions, as FID needs
CFG = EvalConfig(num_samples=N, fid_draws=1, seed=0, collapse_ratio=0.25)


class Replay(nn.Module):
    """A generator that hands back a pool of images in turn, whatever the latents: [n, C, H, W] in [0, 1]."""

    def __init__(self, pool: torch.Tensor):
        super().__init__()
        self.pool, self.at = pool, 0
        self.dummy = nn.Parameter(torch.zeros(()))  # the evaluation asks for a device

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        rows = (self.at + torch.arange(len(z))) % len(self.pool)
        self.at += len(z)
        return self.pool[rows]


@pytest.fixture(scope="module")
def world() -> dict:
    """Training images (the reference), held-out images (the floor) and a disjoint pool of real images; a classifier
    trained for two epochs on the training images as the feature network."""
    source = load_source("bundled-digits")  # [1797, 1, 8, 8] uint8
    images = source.images
    classifier = train_classifier(images[:1000], source.labels[:1000], 10, epochs=2, seed=0)
    extractor = build_extractor("classifier", classifier=classifier, classifier_key="test")
    train, heldout, pool = images[:1000], images[1000 : 1000 + N], images[1000 + N : 1000 + 2 * N]
    feats, probs = extractor.embed(train)
    reference = evaluation.Reference.of(feats, class_histogram(probs))
    return {"train": train, "heldout": heldout, "pool": to_float(pool), "classifier": classifier, "extractor": extractor, "reference": reference}


def evaluate(world: dict, G: nn.Module, **options: object) -> evaluation.Evaluation:
    return evaluation.evaluate(G, Latent(z_dim=4), world["heldout"], lambda: [world["train"]], world["extractor"], world["classifier"],
                               world["reference"], np.full(10, 0.1), CFG, **options)


def test_real_images_score_at_the_floor_and_noise_far_above_it(world: dict) -> None:
    real = evaluate(world, Replay(world["pool"]))
    report = real.report
    model, floor = report["model"], report["real_vs_real"]
    assert abs(model["fid"] - floor["fid"]) < 3 * (model["fid_bootstrap_std"] + floor["fid_bootstrap_std"])
    assert report["fid_draws"]["values"][0] == model["fid"] and len(report["fid_draws"]["values"]) == 1 + CFG.fid_draws
    assert report["memorisation"]["pixels"]["memorised_share"] < 0.2 and report["collapsed"] is None
    noise = evaluate(world, Replay(torch.rand(N, 1, 8, 8))).report
    assert noise["model"]["fid"] > 5 * floor["fid"] and noise["model"]["precision"] < model["precision"]
    assert real.fake.shape == (N, 1, 8, 8) and real.closest.shape == (16, 2) and real.by_label is None
    json.dumps(report)  # what the stage writes


def test_the_report_holds_exactly_the_metrics_it_is_asked_for_in_their_order(world: dict) -> None:
    report = evaluate(world, Replay(world["pool"]), metrics=("kid", "fid")).report
    assert set(report["model"]) == set(report["real_vs_real"]) == {"kid", "kid_std", "fid", "fid_bootstrap_mean", "fid_bootstrap_std"}
    names = [line["name"] for line in report["metrics"]]
    assert names == ["kid", "fid", "fid_draws", "memorisation", "memorisation"]
    assert evaluation.headline(report).startswith("KID ")  # the first metric is the headline
    with pytest.raises(ValueError, match="unknown metric 'fdi'"):
        evaluate(world, Replay(world["pool"]), metrics=("fid", "fdi"))
    with pytest.raises(ValueError, match="'memorisation' does not score one image set"):
        evaluate(world, Replay(world["pool"]), metrics=("memorisation",))


def test_a_registered_metric_named_in_the_list_reaches_every_summary(world: dict, monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    """A new metric is its module (registering itself) and its name in the list: the report, its summary line and the
    stage's markdown table show it with no edit anywhere else."""
    from pipelines.stages.evaluate import report_markdown  # noqa: PLC0415 - imports Prefect

    monkeypatch.setattr(registry, "METRICS", dict(registry.METRICS))  # registered for this test only

    @register("mean_gap", options=lambda context: {"seed": context.seed}, shown=(Shown("mean gap", "mean_gap", ".3f"),))
    def mean_gap(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> dict[str, float]:
        return {"mean_gap": float(np.abs(real.mean(0) - fake.mean(0)).mean())}

    report = evaluate(world, Replay(world["pool"]), metrics=(*evaluation.REPORTED, "mean_gap")).report
    gap = next(line for line in report["metrics"] if line["name"] == "mean_gap")
    assert gap["value"] == report["model"]["mean_gap"] and gap["floor"] == report["real_vs_real"]["mean_gap"]
    assert f"mean gap {gap['value']:.3f} (floor {gap['floor']:.3f})" in evaluation.summary_line(report)
    (tmp_path / "report.json").write_text(json.dumps({**report, "checkpoint": "c"}))
    assert f"| mean gap | {gap['value']:.3f} | {gap['floor']:.3f} |" in report_markdown(tmp_path / "report.json")


def test_conditional_models_get_their_label_accuracy_and_its_samples(world: dict) -> None:
    class Labelled(Replay):
        def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
            assert c is not None and len(c) == len(z)  # labels drawn in the class mix
            return super().forward(z)

    result = evaluation.evaluate(Labelled(world["pool"]), Latent(z_dim=4, num_classes=10), world["heldout"], lambda: [world["train"]],
                                 world["extractor"], world["classifier"], world["reference"], np.full(10, 0.1), CFG, metrics=("fid",))
    accuracy = result.report["conditional"]
    assert len(accuracy["per_class_accuracy"]) == 10 and accuracy["min_accuracy"] <= accuracy["mean_accuracy"]
    assert result.by_label.shape == (10, evaluation.BY_LABEL, 1, 8, 8)
    assert result.report["metrics"][-1]["label"] == "label accuracy, worst class"
