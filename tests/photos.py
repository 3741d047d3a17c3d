"""Real colour photos as local image files: crops of the bundled photos (`bundled-photos`) written as JPEGs, so the
image-folder code (listing, decoding, class folders) is tested on files as a user would have them."""

from pathlib import Path

import numpy as np
from PIL import Image

from gan.data.formats.bundled import open_bundled
from gan.data.rows import read_rows
from gan.data.shaping import Shaping


def write_photos(root: Path, count: int, size: int = 32, labelled: bool = True, quality: int = 90) -> Path:
    """`count` crops of `bundled-photos` (half from each photo, in source order) as `size`-px JPEG files: in one folder
    per photo (root/china/00000.jpg, root/flower/...) or, not `labelled`, all in `root`. Returns `root`."""
    rows = open_bundled("bundled-photos", Shaping(channels=3, size=size))  # only the rows read are resized
    picked = np.concatenate([np.flatnonzero(rows.labels == k)[: (count + k) // 2] for k in range(len(rows.class_names))])
    for images, good, _ in read_rows(rows, picked):
        for image, row in zip(images, good):  # image: [3, size, size] uint8
            folder = root / rows.class_names[rows.labels[row]] if labelled else root
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{row:05d}.jpg", quality=quality)
    return root
