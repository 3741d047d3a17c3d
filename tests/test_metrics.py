"""Metrics: FID of identical sets is ~0 and grows with a shift; IS bounds; coverage and KL."""

import numpy as np
import pytest
import torch

from gan.metrics.classes import class_histogram, kl_divergence
from gan.metrics.classifier import accuracy, embed, train_classifier
from gan.metrics.evaluation import Embedded, Reference, embed_set, score
from gan.metrics.extractors import build_extractor
from gan.metrics.fid import fid, frechet_distance
from gan.metrics.inception_score import inception_score
from gan.metrics.kid import KID_SUBSETS, kid


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_shift() -> None:
    feats = np.random.default_rng(0).normal(size=(500, 16))
    assert abs(frechet_distance(feats, feats)) < 1e-6
    small = frechet_distance(feats, feats + 0.1)
    large = frechet_distance(feats, feats + 1.0)
    assert small == pytest.approx(16 * 0.01, rel=1e-3) and large == pytest.approx(16.0, rel=1e-3)


def test_fid_matches_closed_form_for_scaled_gaussians() -> None:
    """Same mean, covariances I and 4I in D dims: Tr(I + 4I - 2*2I) = D."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20000, 4)), 2 * rng.normal(size=(20000, 4))
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.05)


def test_inception_score_bounds() -> None:
    confident_uniform = np.eye(10)[np.arange(1000) % 10]  # every class, each image certain
    assert 9.0 < inception_score(confident_uniform)[0] <= 10.0  # chunks of 100 are only roughly balanced
    collapsed = np.tile(np.eye(10)[3], (1000, 1))  # mode collapse: one class only
    assert inception_score(collapsed)[0] == pytest.approx(1.0, rel=1e-4)


def test_coverage_and_kl_detect_mode_collapse() -> None:
    uniform = np.full(10, 0.1)
    collapsed = class_histogram(np.tile(np.eye(10)[3], (100, 1)))
    assert collapsed[3] == 1.0 and collapsed.sum() == 1.0
    assert kl_divergence(uniform, uniform) == pytest.approx(0.0, abs=1e-9)
    assert kl_divergence(collapsed, uniform) == pytest.approx(np.log(10), rel=1e-3)


def test_classifier_learns_and_scores_real_data_near_the_floor() -> None:
    from gan.data.sources import load_source

    source = load_source("bundled-digits")  # 8x8 digits: tiny and fast
    x, y = source.images, source.labels
    model = train_classifier(x[:1400], y[:1400], 10, epochs=8, seed=0)
    assert accuracy(model, [(x[1400:1500], y[1400:1500]), (x[1500:], y[1500:])]) > 0.8
    ref_feats, ref_probs = embed(model, x[:1000])
    reference = Reference.of(ref_feats, class_histogram(ref_probs))
    extractor = build_extractor("classifier", classifier=model, classifier_key="k")
    real, noise = (score(embed_set(extractor, model, images), reference, 0, 0.01) for images in (x[1000:1400], torch.rand(400, 1, 8, 8)))
    assert real["fid"] < noise["fid"] / 5
    assert real["classes_covered"] == 10 and real["inception_score"] > noise["inception_score"]
    assert real["kid"] < noise["kid"] / 5 and real["fid_bootstrap_std"] < real["fid"]  # every score beside its spread
    assert real["precision"] > noise["precision"] and real["recall"] > noise["recall"] and real["coverage"] > noise["coverage"]


@pytest.mark.parametrize("kid_rescale", [True, False])
def test_scores_against_a_reference_summarised_once_equal_the_metrics_of_its_features(kid_rescale: bool) -> None:
    """The reference's mean, covariance and KID scale, computed once for the model, the floor and every draw, give
    exactly the numbers the metrics give on the reference features themselves."""
    rng = np.random.default_rng(0)
    ref_feats, ref_probs = 3 * rng.normal(size=(300, 8)), rng.dirichlet(np.ones(10), 300)
    reference = Reference.of(ref_feats, class_histogram(ref_probs), kid_rescale)
    scale = np.sqrt((ref_feats**2).mean()) if kid_rescale else 1.0
    for shift in (0.0, 0.5):  # the floor's set and the model's, against the same reference
        feats, probs = 3 * rng.normal(size=(100, 8)) + shift, rng.dirichlet(np.ones(10), 100)
        scores = score(Embedded(feats, probs, probs), reference, seed=3, min_fraction=0.01)
        assert scores["fid"] == reference.fid(feats) == frechet_distance(feats, ref_feats)
        boot = fid(ref_feats, feats, bootstrap_rounds=50, seed=3)
        assert {k: scores[k] for k in boot} == boot  # the FID and its bootstrap spread, from the features themselves
        assert (scores["kid"], scores["kid_std"]) == tuple(kid(ref_feats / scale, feats / scale, subsets=KID_SUBSETS, seed=3).values())
        assert scores["class_kl"] == kl_divergence(class_histogram(probs), class_histogram(ref_probs))


def test_inception_score_does_not_depend_on_row_order() -> None:
    """Images sorted by class must not make every chunk look like one class."""
    sorted_by_class = np.eye(10)[np.repeat(np.arange(10), 100)]
    assert inception_score(sorted_by_class)[0] > 9.0  # unshuffled chunks would each score 1.0
