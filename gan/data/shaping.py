"""What every image becomes: `Shaping` (channels, square side, resampling filter), applied to an image file's bytes
(`decode_image`: PNG, JPEG, WebP or BMP) and to arrays (`conform`). The short side is resized and the centre cropped;
images are never enlarged."""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from gan.data.errors import DataError, one_line

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # the only decoders Pillow may pick, whatever a file's name says
IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
RESIZE_FILTERS = {
    "lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX, "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Shaping:
    """What every source's images are converted to: channels, square side (0: as stored), resampling filter."""

    channels: int = 1
    size: int = 0
    filter: str = "lanczos"


GREY_AS_STORED = Shaping()  # the default: one channel, each image's own size


def decode_image(raw: bytes, where: str, shaping: Shaping) -> np.ndarray:
    """One PNG, JPEG, WebP or BMP file's bytes -> uint8 [C, H, W] with `shaping`'s channels and size."""
    if not raw:
        raise DataError(f"{where}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as image:
            image.load()  # decodes now, so a truncated file fails here and not later
            if image.mode not in IMAGE_MODES:
                raise DataError(f"{where}: pixel mode {image.mode!r} is not supported; expected 8-bit greyscale, palette or colour")
            return shape_image(image, shaping, where)
    except UnidentifiedImageError as err:
        raise DataError(f"{where}: cannot decode (not a PNG, JPEG, WebP or BMP image)") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{where}: cannot decode ({one_line(err)})") from err


def conform(images: np.ndarray, shaping: Shaping, where: str) -> np.ndarray:
    """An array [N, C, H, W] converted to `shaping` (returned as is when it already fits)."""
    n, c, h, w = images.shape
    if shaped_size((c, h, w), shaping, where) == (c, h, w):
        return images
    assert c in (1, 3), f"array sources hold 1 or 3 channels, got {c}"
    pixels = images[:, 0] if c == 1 else images.transpose(0, 2, 3, 1)  # [N, H, W] or [N, H, W, 3]
    return np.stack([shape_image(Image.fromarray(np.ascontiguousarray(p)), shaping, where) for p in pixels])


def shaped_size(shape: tuple[int, ...], shaping: Shaping, where: str) -> tuple[int, int, int]:
    """[C, H, W] of an image of `shape` once shaped; images smaller than `shaping.size` are refused, never enlarged."""
    _, h, w = shape
    if shaping.size and min(h, w) < shaping.size:
        raise DataError(f"{where}: {w}x{h} is smaller than data.image_size = {shaping.size} (images are never enlarged)")
    return (shaping.channels, shaping.size or h, shaping.size or w)


def shape_image(image: Image.Image, shaping: Shaping, where: str) -> np.ndarray:
    """Convert to L or RGB, resize the short side to `shaping.size` and crop the centre square -> [C, H, W]."""
    image = image.convert("L" if shaping.channels == 1 else "RGB")
    w, h = image.size
    _, size, _ = shaped_size((0, h, w), shaping, where)
    if shaping.size:
        scale = size / min(w, h)
        rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
        left, top = (rw - size) // 2, (rh - size) // 2
        image = image.resize((rw, rh), RESIZE_FILTERS[shaping.filter]).crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.uint8)  # [H, W] or [H, W, 3]
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
