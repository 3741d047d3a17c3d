"""Feature extraction over Ray tasks gives the in-process features, in order; small sets never start Ray."""

import dataclasses

import numpy as np
import pytest
import torch

from gan.metrics.classifier import FEATURE_DIM, Classifier
from gan.metrics.extractors import Extractor, build_extractor
from pipelines.cluster.embed import embed_images


@pytest.fixture
def local_ray():
    """A one-CPU local Ray for the test, shut down after it."""
    import ray

    assert not ray.is_initialized()
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def small_extractor() -> Extractor:
    torch.manual_seed(0)
    classifier = Classifier((1, 8, 8), 10)
    extractor = build_extractor("classifier", classifier=classifier, classifier_key="test", inception_weights=None)
    return dataclasses.replace(extractor, batch_size=4)  # 3 chunks of 10 images, each embedded in batches of 4


def test_small_sets_are_embedded_in_process() -> None:
    import ray

    extractor, images = small_extractor(), np.random.default_rng(0).integers(0, 256, (30, 1, 8, 8), dtype=np.uint8)
    feats, probs = embed_images(extractor, images, min_images=31)
    assert not ray.is_initialized() and feats.shape == (30, FEATURE_DIM) and probs.shape == (30, 10)


def test_ray_tasks_give_the_in_process_features_in_order(local_ray: None) -> None:
    extractor, images = small_extractor(), np.random.default_rng(0).integers(0, 256, (30, 1, 8, 8), dtype=np.uint8)
    expected_feats, expected_probs = extractor.embed(images)
    feats, probs = embed_images(extractor, images, min_images=30, chunks=3)
    assert feats.dtype == probs.dtype == np.float64
    np.testing.assert_allclose(feats, expected_feats, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(probs, expected_probs, rtol=1e-6, atol=1e-6)
