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


def panel_of(stat: str) -> str:
    """Which panel of the curves a stat goes to: losses, D's outputs, ADA's p and r_t, or every other term the loss reports."""
    if stat.startswith("loss"):
        return "losses"
    if stat.startswith("ada_"):
        return "adaptive augmentation (p, r_t)"
    if stat.startswith("d_") or stat == "w_distance":
        return "discriminator outputs"
    return "regularisers and other terms"


def save_curves(history: list[dict], path: Path, snapshots: list[dict] | None = None) -> Path:
    """Every logged stat against step, grouped in panels, plus quick FID against training time if measured."""
    plt = _pyplot()
    names = list(dict.fromkeys(k for h in history for k in h if k != "step"))
    panels = list(dict.fromkeys(panel_of(k) for k in names)) + (["quick FID"] if snapshots else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "quick FID":
            ax.plot([s["seconds"] for s in snapshots], [s["fid"] for s in snapshots], marker="o", linewidth=1)
            ax.set_yscale("log")
            ax.set_xlabel("training seconds")
        else:
            for key in (k for k in names if panel_of(k) == panel):
                points = [(h["step"], h[key]) for h in history if key in h]
                ax.plot(*zip(*points), label=key, linewidth=1)
            ax.set_xlabel("step")
            ax.legend(fontsize=8)
        ax.set_title(panel)
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


def _pyplot():  # noqa: ANN202
    import matplotlib  # noqa: PLC0415 - only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def save_labelled_rows(rows: dict[str, np.ndarray], path: Path) -> Path:
    """One row of images [K, C, H, W] per name, the name on the left: e.g. one row of samples per preset."""
    plt = _pyplot()
    width = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.0 * width + 2, 1.1 * len(rows)), squeeze=False)
    for ax, (name, images) in zip(axes[:, 0], rows.items()):
        ax.imshow(np.asarray(grid(images, nrow=width, scale=1)), cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def save_class_histograms(
    histograms: dict[str, np.ndarray | list[float]], path: Path, xlabel: str = "class (as the feature classifier assigns it)",
    ticks: list[str] | None = None,
) -> Path:
    """Side-by-side bars of class shares, one colour per named histogram [K] (e.g. training, held-out, generated)."""
    plt = _pyplot()
    num_classes = len(next(iter(histograms.values())))
    width = 0.8 / len(histograms)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * num_classes), 3.5))
    for i, (name, hist) in enumerate(histograms.items()):
        ax.bar(np.arange(num_classes) + (i - (len(histograms) - 1) / 2) * width, hist, width, label=name)
    ax.set_xticks(np.arange(num_classes), ticks)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of images")
    ax.set_ylim(0, 1.3 * max(max(h) for h in histograms.values()))  # room for the legend above the bars
    ax.legend(fontsize=8, ncol=len(histograms), loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def save_time_to_quality(curves: dict[str, list[dict]], path: Path, targets: tuple[float, ...] = (3.0,),
                         xlabel: str = "training wall time (s)") -> Path:
    """FID / floor against seconds, one line per run: [{'seconds', 'fid_over_floor'}, ...] each; a dashed line per target."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        if points:
            ax.plot([p["seconds"] for p in points], [p["fid_over_floor"] for p in points], marker="o", markersize=3, label=name)
    for target in targets:
        ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(f"{target:g}x floor", (0.01, target), xycoords=("axes fraction", "data"), ha="left", va="bottom", fontsize=7,
                    color="grey")
    ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("FID / real-vs-real floor")
    ax.set_title("time to quality")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
