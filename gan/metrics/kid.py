"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel.

Unlike FID it has an unbiased estimator, so small sample counts do not shift it. Computed as torchmetrics'
KernelInceptionDistance does: for each of `subsets` rounds draw `subset_size` rows of each set without
replacement (torch.randperm, real first, then fake), and report the mean and population std of the
per-subset MMD^2. Seeding torch's global generator with `seed` reproduces torchmetrics' draws exactly.
"""

import torch

from gan.metrics.registry import Features, Shown, register

KID_SUBSETS = 50  # the evaluation's subsets of min(1000, N) samples; their spread is KID's std


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """k(x, y) = (x.y / D + coef)^degree for rows [N, D] x [M, D] -> [N, M], in x's dtype."""
    return (x @ y.T).div_(x.shape[1]).add_(coef).pow_(degree)


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """Unbiased MMD^2 of two equally sized sets [m, D]: the within-set means leave out the diagonal k(x, x).
    The kernel matrices take x's dtype; their sums are float64."""
    m = x.shape[0]

    def total(k: torch.Tensor, leave_out_diagonal: bool) -> torch.Tensor:
        return k.sum(dtype=torch.float64) - (k.diagonal().sum(dtype=torch.float64) if leave_out_diagonal else 0.0)

    within = (total(polynomial_kernel(x, x, degree, coef), True) + total(polynomial_kernel(y, y, degree, coef), True)) / (m * (m - 1))
    return within - 2.0 * total(polynomial_kernel(x, y, degree, coef), False) / m**2


def kernel_inception_distance(
    real: Features, fake: Features, subsets: int = 100, subset_size: int = 1000, seed: int = 0, degree: int = 3, coef: float = 1.0
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over `subsets` random subsets. The kernel matrices are float32 (twice
    as fast as float64; each entry's rounding is random, and over the 10^6 entries of a subset it averages out
    far below KID's 1e-4 agreement with torchmetrics' float64), their sums float64."""
    x, y = torch.as_tensor(real).to(torch.float32), torch.as_tensor(fake).to(torch.float32)
    if min(len(x), len(y)) < subset_size or subset_size < 2:
        raise ValueError(f"KID subset_size {subset_size} needs 2 <= subset_size <= samples; got {len(x)} real and {len(y)} fake samples")
    gen = torch.Generator().manual_seed(seed)
    scores = torch.empty(subsets, dtype=torch.float64)
    for s in range(subsets):
        real_rows = torch.randperm(len(x), generator=gen)[:subset_size]
        fake_rows = torch.randperm(len(y), generator=gen)[:subset_size]
        scores[s] = mmd2_unbiased(x[real_rows.to(x.device)], y[fake_rows.to(y.device)], degree, coef)
    return float(scores.mean()), float(scores.std(unbiased=False))


@register("kid", options=lambda context: {"subsets": KID_SUBSETS, "seed": context.seed, "scale": context.kid_scale},
          shown=(Shown("KID", "kid", ".4f", std="kid_std"),))
def kid(real: Features, fake: Features, subsets: int = 100, subset_size: int = 1000, seed: int = 0, scale: float = 1.0) -> dict[str, float]:
    """KID mean and std of both sets divided by `scale`; `subset_size` is capped by the smaller set, so small evaluations
    still score. The cubic kernel (x.y / D + 1)^3 assumes features of order 1 (Inception's pool features are, and are left
    as they are, so KID stays the published one); ReLU classifier features are larger, and the kernel's cube then drowns
    the signal in noise: the evaluation passes one global scale, the reference's root mean square, for the model and the
    floor alike."""
    mean, std = kernel_inception_distance(real / scale, fake / scale, subsets, min(subset_size, len(real), len(fake)), seed)
    return {"kid": mean, "kid_std": std}
