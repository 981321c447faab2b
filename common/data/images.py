"""Image folders: find, check and decode images of any size and format into [-1, 1] tensors.

Every file is checked once up front (its header, cheaply, in threads): an unusable file is skipped and
counted with its reason, a folder with no usable image is refused with one sentence. Decoding happens in
parallel inside tf.data.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
from PIL import Image

from common.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Formats TensorFlow's decoder reads; others (TIFF, ...) are skipped with a reason.
_DECODABLE = {"PNG", "JPEG", "BMP", "GIF", "MPO"}
# Larger images are refused: a decompression bomb must not take the machine's memory.
MAX_PIXELS = 64_000_000


def find_images(folder: str | os.PathLike, flag: str = "--data") -> list[Path]:
    """All image files below `folder` (recursively, not following symlinked folders), sorted."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{flag} {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file; expected a folder of images")
    found = []
    for parent, _dirs, files in os.walk(folder, onerror=None, followlinks=False):
        found += [Path(parent) / f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not found:
        raise UserError(f"{flag} {folder} contains no images (looked for {', '.join(IMAGE_EXTENSIONS)} "
                        "files in it and its subfolders)")
    return sorted(found)


def check_image(path: Path) -> str | None:
    """Why `path` cannot be used, or None if its header says it is a readable image."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            kind = image.format
    except Image.DecompressionBombError:
        return "too many pixels"
    except Exception as error:  # Pillow raises OSError, SyntaxError, EOFError, struct.error, ... for damaged files
        return f"not a readable image ({error.__class__.__name__})"
    if kind not in _DECODABLE:
        return f"unsupported format {kind}"
    if width * height > MAX_PIXELS:
        return f"too large ({width}x{height} pixels)"
    return None


def usable_images(paths: list[Path], log: Callable[[str], None] = print, flag: str = "--data") -> list[Path]:
    """Keeps the files whose header is readable; logs how many were skipped and why."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(check_image, paths))
    good = [p for p, why in zip(paths, reasons) if why is None]
    bad = [(p, why) for p, why in zip(paths, reasons) if why is not None]
    if bad:
        shown = "; ".join(f"{p.name}: {why}" for p, why in bad[:3])
        log(f"skipped {len(bad)} of {len(paths)} image files ({shown}{'; ...' if len(bad) > 3 else ''})")
    if not good:
        raise UserError(f"{flag}: none of the {len(paths)} image files could be read (e.g. {shown})")
    return good


def to_8bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit greyscale (PIL modes I;16*, I) scaled to 8-bit L: PIL's own convert() clips them at 255."""
    if image.mode.startswith("I"):
        levels = np.asarray(image, np.float64) / 257.0  # 65535 -> 255, as TensorFlow's PNG decoder does
        return Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8), "L")
    return image


def decode_image(path: tf.Tensor, size: int, channels: int = 3) -> tf.Tensor:
    """Reads one file: centre-crop to a square, resize to size x size, scale to [-1, 1] (float32)."""
    raw = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    height, width = tf.shape(raw)[0], tf.shape(raw)[1]
    side = tf.minimum(height, width)
    square = tf.image.crop_to_bounding_box(raw, (height - side) // 2, (width - side) // 2, side, side)
    image = tf.image.resize(tf.cast(square, tf.float32), [size, size], antialias=True)
    image = tf.ensure_shape(image, [size, size, channels])
    return tf.clip_by_value(image / 127.5 - 1.0, -1.0, 1.0)


def image_folder(folder: str | os.PathLike, size: int, channels: int = 3, log: Callable[[str], None] = print,
                 flag: str = "--data") -> tuple[int, Callable[[tf.Tensor], dict[str, tf.Tensor]]]:
    """(number of usable images, a `take(index)` for common.data.stream.training_stream)."""
    paths = usable_images(find_images(folder, flag), log, flag)
    files = tf.constant([str(p) for p in paths])
    log(f"{len(paths)} images in {folder}")
    return len(paths), lambda index: {"real": decode_image(tf.gather(files, index), size, channels)}


def load_folder_array(folder: str | os.PathLike, size: int, channels: int, log: Callable[[str], None] = print,
                      flag: str = "--data") -> np.ndarray:
    """A small image folder decoded into one uint8 array (N, size, size, channels), bad files skipped."""
    paths = usable_images(find_images(folder, flag), log, flag)
    mode = "L" if channels == 1 else "RGB"
    images, failed = [], 0
    for path in paths:
        try:
            with Image.open(path) as image:
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                image = to_8bit(image).convert(mode).crop((left, top, left + side, top + side))
                images.append(np.asarray(image.resize((size, size), Image.BILINEAR), np.uint8))
        except Exception as error:  # a damaged file that passed the header check (OSError, SyntaxError, ...)
            failed += 1
            log(f"skipped {path.name}: {error.__class__.__name__}: {error}")
    if not images:
        raise UserError(f"{flag}: none of the {len(paths)} image files in {folder} could be decoded")
    array = np.stack(images)
    return array[..., None] if channels == 1 else array
