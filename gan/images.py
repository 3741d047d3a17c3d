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
