"""Image grids, de-normalisation and PNG output."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats (a tanh generator's range) to 0..255 bytes."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, columns: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tiles N images (N, H, W[, C]) in [-1, 1] into one uint8 picture (rows x columns)."""
    images = to_uint8(images)
    if images.ndim == 3:
        images = images[..., None]
    count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, channels), pad_value, np.uint8)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        grid[top:top + height, left:left + width] = image
    return grid[..., 0] if channels == 1 else grid


def save_png(path: str | os.PathLike, picture: np.ndarray) -> Path:
    """Writes a uint8 picture atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        Image.fromarray(picture).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:  # a failed or interrupted write leaves nothing behind
        tmp.unlink(missing_ok=True)
    return path


def save_grid(path: str | os.PathLike, images: np.ndarray, columns: int | None = None) -> Path:
    return save_png(path, make_grid(images, columns))
