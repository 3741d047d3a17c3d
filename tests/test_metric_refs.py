"""The feature-set metrics against references: torchmetrics for FID and KID on the same features, brute-force
O(N^2) numpy for precision/recall and density/coverage, and the properties the streaming FID must keep."""

import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gan.metrics.fid import StreamingStats, frechet_distance, frechet_distance_from_stats, streaming_stats
from gan.metrics.kid import kernel_inception_distance
from gan.metrics.memorisation import find_memorisation
from gan.metrics.registry import compute
from gan.metrics.density_coverage import density_coverage
from gan.metrics.precision_recall import precision_recall


def identity_features(dim: int) -> nn.Module:
    """torchmetrics' feature module: the batch it is given is already the features, so both sides see the same
    numbers. `num_features` spares FID its probe with a dummy 299 x 299 image."""
    module = nn.Identity()
    module.num_features = dim
    return module


def two_sets(n_real: int = 400, n_fake: int = 300, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real N(0, I) and fake shifted, stretched and correlated, so every metric is far from its trivial value."""
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n_real, dim))
    fake = rng.normal(size=(n_fake, dim)) @ (np.eye(dim) + 0.3 * rng.normal(size=(dim, dim)) / np.sqrt(dim)) + 0.4
    return real, fake


def torchmetrics_on(metric: FrechetInceptionDistance | KernelInceptionDistance, real: np.ndarray, fake: np.ndarray) -> None:
    """Feed both feature sets to a torchmetrics metric, in batches of 128 rows."""
    for rows in torch.from_numpy(real).split(128):
        metric.update(rows, real=True)
    for rows in torch.from_numpy(fake).split(128):
        metric.update(rows, real=False)


def test_fid_matches_torchmetrics_on_the_same_features() -> None:
    real, fake = two_sets()
    reference = FrechetInceptionDistance(feature=identity_features(real.shape[1]))
    torchmetrics_on(reference, real, fake)
    expected = float(reference.compute())
    assert expected > 1.0
    assert compute("fid", real, fake, batch_size=97)["fid"] == pytest.approx(expected, rel=1e-4)
    assert frechet_distance(fake, real) == pytest.approx(expected, rel=1e-4)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all extracted features")
def test_kid_matches_torchmetrics_on_the_same_subsets() -> None:
    """Ours draws each subset with torch.randperm (real, then fake) from a generator seeded with `seed`;
    torchmetrics draws the same permutations from torch's global generator, so seeding that one alike
    makes both score identical subsets, and the mean and std must agree."""
    real, fake = two_sets()
    reference = KernelInceptionDistance(feature=nn.Identity(), subsets=7, subset_size=60)
    torchmetrics_on(reference, real, fake)
    torch.manual_seed(123)
    expected_mean, expected_std = (float(v) for v in reference.compute())
    mean, std = kernel_inception_distance(real, fake, subsets=7, subset_size=60, seed=123)
    assert expected_mean > 0.05 and expected_std > 0
    assert mean == pytest.approx(expected_mean, rel=1e-4) and std == pytest.approx(expected_std, rel=1e-4)


def test_kid_subset_size_larger_than_a_set_names_the_counts() -> None:
    real, fake = two_sets(n_fake=50)
    with pytest.raises(ValueError, match="subset_size 60 .* got 400 real and 50 fake samples"):
        kernel_inception_distance(real, fake, subset_size=60)


def test_fid_of_a_set_with_itself_is_zero() -> None:
    real, _ = two_sets()
    stats = streaming_stats(real, batch_size=64).stats()
    assert abs(frechet_distance_from_stats(*stats, *stats)) < 1e-6 * np.trace(stats[1])


def test_streaming_stats_equal_the_one_shot_mean_and_covariance() -> None:
    """Uneven batches, and a mean far from zero against the spread (where a raw sum of x x^T would cancel)."""
    feats = np.random.default_rng(2).normal(size=(1000, 24)) * 0.1 + 50.0
    stats = StreamingStats()
    for batch in np.split(feats, [1, 7, 300, 301, 777]):
        stats.update(torch.from_numpy(batch))
    mu, cov = stats.stats()
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cov, np.cov(feats, rowvar=False), rtol=1e-10, atol=1e-10)


def test_fid_with_fewer_samples_than_dimensions_is_refused_with_the_counts() -> None:
    real, fake = two_sets(n_fake=32, dim=32)
    with pytest.raises(ValueError, match="got 32 samples of 32-d features \\(at least 33 needed"):
        compute("fid", real, fake)


def brute_force_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Every definition written out on full float64 distance matrices."""
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)  # [N, N]
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)  # [M, M]
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=-1)  # [M, N]
    r_real, r_fake = np.sort(d_rr, 1)[:, k], np.sort(d_ff, 1)[:, k]  # column 0 is the sample itself
    inside_real = d_fr <= r_real[None, :]  # [M, N]: fake j in real ball i
    return {
        "precision": inside_real.any(1).mean(),
        "recall": (d_fr.T <= r_fake[None, :]).any(1).mean(),
        "density": inside_real.sum() / (k * len(fake)),
        "coverage": (d_fr.min(0) <= r_real).mean(),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("budget", [1000, 2**24])  # 1000 entries: chunks of 5 rows against 200
def test_precision_recall_density_coverage_match_brute_force(dtype: torch.dtype, budget: int) -> None:
    real, fake = two_sets(n_real=200, n_fake=180, dim=8, seed=3)
    real += 20.0  # far from the origin: the float32 path must still agree
    fake += 20.0
    ours = precision_recall(real, fake, k=3, dtype=dtype, budget=budget) | density_coverage(real, fake, k=5, dtype=dtype, budget=budget)
    pr, dc = brute_force_prdc(real, fake, k=3), brute_force_prdc(real, fake, k=5)
    expected = {"precision": pr["precision"], "recall": pr["recall"], "density": dc["density"], "coverage": dc["coverage"]}
    assert 0.1 < min(expected.values()) and max(expected.values()) < 0.95  # no trivial 0 or 1 to agree on
    assert ours == pytest.approx(expected, abs=1e-12)


def test_identical_sets_have_full_precision_recall_and_coverage() -> None:
    real, _ = two_sets(n_real=150, dim=8)
    assert precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    assert density_coverage(real, real)["coverage"] == 1.0


def test_memorisation_finds_copied_training_images_at_distance_zero() -> None:
    """Pixels, flattened: 20 generated images are training images, 80 are fresh draws like the held-out ones."""
    rng = np.random.default_rng(4)
    train, heldout, fresh = (rng.integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8) for n in (300, 100, 80))
    copied = rng.choice(300, 20, replace=False)
    fake = np.concatenate([train[copied], fresh])
    m = find_memorisation(train, fake, heldout, percentile=5.0, top=20, budget=700)
    assert (m.fake_distances[:20] == 0).all() and (m.fake_nearest[:20] == copied).all()
    assert m.threshold > 0 and (m.fake_distances[20:] > 0).all()
    assert 0.2 <= m.share <= 0.2 + 0.8 * 0.2  # every copy, and few fresh draws (about 5% expected)
    assert sorted(m.closest[:, 0]) == list(range(20)) and (m.closest[:, 1] == copied[m.closest[:, 0]]).all()
    assert compute("memorisation", train, fake, heldout=heldout)["memorised_share"] == m.share
    # The training set in blocks, as the evaluation streams a split from disk: the same answer.
    blocks = lambda: (train[i : i + 70] for i in range(0, 300, 70))  # noqa: E731
    streamed = find_memorisation(blocks, fake, heldout, percentile=5.0, top=20, budget=700)
    for field in ("fake_distances", "fake_nearest", "heldout_distances", "closest"):
        np.testing.assert_allclose(getattr(streamed, field), getattr(m, field), rtol=1e-6, err_msg=field)
    assert streamed.share == m.share


def test_unknown_metric_names_the_known_ones() -> None:
    import gan.metrics.evaluation  # noqa: F401, PLC0415 - fills METRICS with every metric a report can name

    with pytest.raises(ValueError, match="unknown metric 'fdi'; known: classes, density_coverage, fid, inception_score, kid, memorisation, precision_recall"):
        compute("fdi", np.zeros((3, 2)), np.zeros((3, 2)))
