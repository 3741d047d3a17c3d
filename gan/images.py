"""Sample grids as PNG, with numpy and Pillow only."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def grid(images: np.ndarray | torch.Tensor, nrow: int = 8, pad: int = 2, scale: int = 2) -> Image.Image:
    """Tile images [N, C, H, W] (floats in [0, 1] or uint8) into one picture, scaled up for viewing."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if images.dtype != np.uint8:
        images = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    n, c, h, w = images.shape
    assert c in (1, 3), f"grid needs 1 or 3 channels, got {c}"
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    canvas = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), 128, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = img.transpose(1, 2, 0)
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def save_grid(images: np.ndarray | torch.Tensor, path: Path, nrow: int = 8) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid(images, nrow=nrow).save(path)
    return path


def save_curves(history: list[dict], path: Path) -> Path:
    """Training curves (losses and D's mean outputs against step) as a PNG."""
    import matplotlib  # noqa: PLC0415 - only this picture needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    steps = [h["step"] for h in history]
    fig, (losses, outputs) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, label in (("loss_d", "D loss"), ("loss_g", "G loss (non-saturating)")):
        losses.plot(steps, [h[key] for h in history], label=label, linewidth=1)
    for key, label in (("d_real", "D(x), real"), ("d_fake", "D(G(z)), fake")):
        outputs.plot(steps, [h[key] for h in history], label=label, linewidth=1)
    outputs.axhline(0.5, color="grey", linewidth=0.5, linestyle="--")
    for ax, title in ((losses, "losses"), (outputs, "discriminator outputs")):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def class_rows(images: np.ndarray | torch.Tensor, classes: np.ndarray, num_classes: int, per_class: int = 8, seed: int = 0) -> np.ndarray:
    """Pick up to `per_class` random images of each class, one row per class, blanks where too few."""
    images = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
    rng = np.random.default_rng(seed)
    rows = np.zeros((num_classes * per_class, *images.shape[1:]), dtype=images.dtype)
    for k in range(num_classes):
        members = np.flatnonzero(classes == k)
        chosen = rng.choice(members, min(per_class, len(members)), replace=False)
        rows[k * per_class : k * per_class + len(chosen)] = images[chosen]
    return rows
