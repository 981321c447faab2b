"""SRGAN's images: random HR/LR training crops in tf.data, fixed validation crops, and tiled upscaling.

Training: each example is a random hr_size crop (with random flips) of one image of the folder, and its LR
version made by bicubic 4x downsampling; decoding happens in parallel inside tf.data. The crop of example i
is fixed by (seed, i), so a resumed run sees the same crops an unbroken one would.

Upscaling a file: inference.Upscaler computes the 4x image band by band, exactly as one pass of the network
over the whole image would, and each band is written to the PNG as it is done, so memory is bounded by one
band, not by the image size.
"""
from __future__ import annotations

import contextlib
import os
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import tensorflow as tf
from PIL import Image

from chapters.srgan.models import SCALE, downsample
from common.cli import check_terminated
from common.data.images import check_image, find_images, to_8bit, usable_images
from common.errors import UserError

if TYPE_CHECKING:
    from chapters.srgan.inference import Upscaler


# --- training crops -------------------------------------------------------------------------------------

def quantize(images: tf.Tensor) -> tf.Tensor:
    """Rounds [-1, 1] images to the 256 levels of an 8-bit file (an LR photo is 8-bit too)."""
    return tf.round((images + 1.0) * 127.5) / 127.5 - 1.0


def decode_rgb(path: tf.Tensor) -> tf.Tensor:
    """Any PNG/JPEG/BMP/GIF file (grey, RGB, RGBA, palette) -> (H, W, 3) float32 in [-1, 1]."""
    raw = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.cast(raw, tf.float32) / 127.5 - 1.0


def random_crop_pair(image: tf.Tensor, hr_size: int, seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """A random hr_size crop with random flips, and its bicubic 1/4 (both in [-1, 1])."""
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    # Images smaller than the crop are enlarged first (e.g. CelebA's 178x218 with the book's 256 crops).
    factor = tf.maximum(1.0, hr_size / tf.cast(side, tf.float32))
    size = tf.cast(tf.math.ceil(tf.cast(shape[:2], tf.float32) * factor), tf.int32)
    image = tf.cond(factor > 1.0, lambda: tf.image.resize(image, size, method="bicubic"), lambda: image)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    hr = tf.image.stateless_random_crop(image, [hr_size, hr_size, 3], seeds[0])
    hr = tf.image.stateless_random_flip_left_right(hr, seeds[1])
    hr = tf.image.stateless_random_flip_up_down(hr, seeds[2])
    hr = tf.clip_by_value(hr, -1.0, 1.0)
    return {"lr": quantize(downsample(hr)), "hr": hr}


def training_crops(folder: str | os.PathLike, hr_size: int, crops_per_image: int, seed: int,
                   log: Callable[[str], None] = print, flag: str = "--data"
                   ) -> tuple[int, Callable[[tf.Tensor], dict[str, tf.Tensor]]]:
    """(number of examples per pass, take(index)) for common.data.stream.training_stream(fresh_each_pass=True).

    A pass holds `crops_per_image` random crops of every usable image; example `index` (any int64: the stream
    numbers pass p's examples from p * count) is a crop of image index % images at a place and with flips drawn
    from (seed, index), so every pass cuts new crops and a resumed run cuts the same ones. Unreadable files are
    skipped and counted up front, files that fail later (truncated) are dropped by the stream.
    """
    if hr_size % SCALE:
        raise UserError(f"--hr-size {hr_size} must be a multiple of {SCALE}")
    paths = usable_images(find_images(folder, flag), log, flag)
    files = tf.constant([str(p) for p in paths])
    count = len(paths)
    log(f"{count} images in {folder}, {crops_per_image} random {hr_size}x{hr_size} crop(s) of each per epoch")

    def take(index: tf.Tensor) -> dict[str, tf.Tensor]:
        index = tf.cast(index, tf.int64)
        image = decode_rgb(tf.gather(files, index % count))
        return random_crop_pair(image, hr_size, tf.stack([tf.constant(seed, tf.int64), index]))

    return count * crops_per_image, take


# --- held-out images ------------------------------------------------------------------------------------

def read_rgb(path: str | os.PathLike, flag: str = "--input") -> np.ndarray:
    """A file as (H, W, 3) uint8, or a UserError saying why it cannot be used."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{flag} {path} does not exist")
    why = check_image(path)
    if why is not None:
        raise UserError(f"{flag} {path} cannot be used: {why}")
    try:
        with Image.open(path) as image:
            return np.asarray(to_8bit(image).convert("RGB"), np.uint8)
    except Exception as error:  # Pillow raises OSError, SyntaxError, ... for a damaged file
        raise UserError(f"{flag} {path} cannot be used: not a readable image ({error.__class__.__name__})") from None


def load_held_out(folder: str | os.PathLike, log: Callable[[str], None] = print, flag: str = "--eval-data"
                  ) -> list[tuple[str, np.ndarray]]:
    """(name, HR uint8 image cropped to a multiple of 4) for every usable image of the folder."""
    out = []
    for path in usable_images(find_images(folder, flag), log, flag):
        try:
            image = read_rgb(path, flag)
        except UserError as error:
            log(f"skipped {path.name}: {error}")
            continue
        height, width = (image.shape[0] // SCALE) * SCALE, (image.shape[1] // SCALE) * SCALE
        if min(height, width) < 4 * SCALE:
            log(f"skipped {path.name}: smaller than {4 * SCALE}x{4 * SCALE} pixels")
            continue
        out.append((path.name, image[:height, :width]))
    if not out:
        raise UserError(f"{flag} {folder}: no usable image")
    return out


def make_lr(hr: np.ndarray) -> np.ndarray:
    """HR images in [-1, 1] -> their bicubic 1/4, 8-bit quantised, as float32 in [-1, 1]."""
    return quantize(downsample(tf.constant(hr, tf.float32))).numpy()


def side_by_side(rows: list[tuple[np.ndarray, ...]], labels: tuple[str, ...], gap: int = 4) -> np.ndarray:
    """One uint8 picture: per row, its images (same size each, uint8) side by side at full size, a label above
    each column; rows of different sizes are stacked, left-aligned, on white."""
    from PIL import ImageDraw

    label_h = 14
    width = max(sum(image.shape[1] for image in row) + gap * (len(row) - 1) for row in rows)
    height = label_h + sum(row[0].shape[0] for row in rows) + gap * (len(rows) - 1)
    picture = np.full((height, width, 3), 255, np.uint8)
    top = label_h
    for row in rows:
        left = 0
        for image in row:
            picture[top:top + image.shape[0], left:left + image.shape[1]] = image
            left += image.shape[1] + gap
        top += row[0].shape[0] + gap
    canvas = Image.fromarray(picture)
    draw = ImageDraw.Draw(canvas)
    left = 0
    for label, image in zip(labels, rows[0]):
        draw.text((left + 2, 1), label, fill=(0, 0, 0))
        left += image.shape[1] + gap
    return np.asarray(canvas)


# --- upscaling a file (the network's part: inference.Upscaler) ---------------------------------------

def partial_path(path: Path) -> Path:
    """Where PngWriter writes until the image is complete: a hidden name beside `path`."""
    return path.with_name(f".{path.name}.partial")


class PngWriter:
    """Writes an RGB PNG band by band (filter "Up", zlib), so a large output never sits in memory whole.

    The rows go to partial_path(path) and are renamed to `path` by close(); abort() (or any exception, also
    Ctrl-C and SIGTERM, while the header is written) removes the partial file."""

    def __init__(self, path: Path, width: int, height: int) -> None:
        self.path, self.width, self.height = path, width, height
        self.tmp = partial_path(path)
        self.handle = open(self.tmp, "wb")
        try:
            self.handle.write(b"\x89PNG\r\n\x1a\n")
            self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        except BaseException:
            self.abort()
            raise
        self.compressor = zlib.compressobj(6)
        self.previous = np.zeros((width * 3,), np.uint8)
        self.rows = 0

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.handle.write(struct.pack(">I", len(data)) + kind + data)
        self.handle.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    def write(self, band: np.ndarray) -> None:
        rows = band.reshape(band.shape[0], -1)
        above = np.concatenate([self.previous[None], rows[:-1]], axis=0)
        filtered = np.concatenate([np.full((len(rows), 1), 2, np.uint8), rows - above], axis=1)  # uint8 wraps
        data = self.compressor.compress(filtered.tobytes())
        if data:
            self._chunk(b"IDAT", data)
        self.previous = rows[-1].copy()
        self.rows += len(rows)

    def close(self) -> None:
        self._chunk(b"IDAT", self.compressor.flush())
        self._chunk(b"IEND", b"")
        self.handle.close()
        if self.rows != self.height:
            self.tmp.unlink(missing_ok=True)
            raise RuntimeError(f"PNG {self.path}: wrote {self.rows} of {self.height} rows")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Tiles done of all, time elapsed and the ETA, on stderr.

    On a terminal: a tqdm bar. Otherwise (a log file, a pipe): a line after the first tile when the image will
    take `first_after` seconds or more, so the ETA is known at once, then one every `every` seconds.
    """

    def __init__(self, total: int, label: str, stream=None, every: float = 30.0, first_after: float = 10.0) -> None:
        self.total, self.label, self.every, self.first_after = total, label, every, first_after
        self.stream = sys.stderr if stream is None else stream
        self.done, self.started, self.last = 0, time.monotonic(), None
        self.bar = None
        isatty = getattr(self.stream, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="tile", file=self.stream, leave=False, dynamic_ncols=True)

    def __call__(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.monotonic()
        elapsed = now - self.started
        eta = elapsed / self.done * (self.total - self.done)
        due = (now - self.last >= self.every) if self.last is not None else elapsed + eta >= self.first_after
        if due and self.done < self.total:
            self.last = now
            print(f"{self.label}: {self.done}/{self.total} tiles, {_clock(elapsed)} elapsed, ETA {_clock(eta)}",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def upscale_file(upscaler: Upscaler, source: Path, target: Path, label: str | None = None,
                 progress_stream=None) -> tuple[int, int]:
    """Reads `source`, writes its 4x PNG to `target` (atomically); returns the output (width, height).

    Progress goes to stderr (see Progress). An error or interrupt (Ctrl-C, SIGTERM) leaves no partial file and
    no output folder this call created."""
    image = read_rgb(source)
    lr = image.astype(np.float32) / 127.5 - 1.0
    height, width = image.shape[0] * SCALE, image.shape[1] * SCALE
    made = [folder for folder in reversed(target.parents) if not folder.exists()]
    progress = Progress(upscaler.tiles(*image.shape[:2]), label or source.name, progress_stream)

    def on_tile() -> None:
        check_terminated()  # a SIGTERM whose exception library code swallowed still stops at the next tile
        progress()

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        writer = PngWriter(target, width, height)
        try:
            for band in upscaler.bands(lr, on_tile=on_tile):
                writer.write(band)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    except BaseException:
        partial_path(target).unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise
    finally:
        progress.close()
    return width, height


def plan_outputs(source: Path, output: str | None, overwrite: bool) -> list[tuple[Path, Path]]:
    """(input file, output PNG) pairs for --input FILE_OR_DIR --output PATH, checked before any work.

    Every output follows common.run.output_file's rule: never a folder (for one image), never an input, an
    existing file only with --overwrite. In a folder, the *_x4.png files this command writes for its images are
    outputs, not inputs: running it again never makes *_x4_x4.png.
    """
    from common.run import output_file

    if not source.exists():
        raise UserError(f"--input {source} does not exist")
    if source.is_dir():
        folder = Path(output) if output else source.with_name(source.name + "_x4")
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--output {folder} is a file; with a folder as --input, give a folder as --output")
        found = find_images(source, "--input")

        def target_of(file: Path) -> Path:
            return folder / file.relative_to(source).with_name(file.stem + "_x4.png")

        outputs = {os.path.realpath(target_of(f)) for f in found}
        own = [f for f in found if os.path.realpath(f) in outputs]
        files = [f for f in found if os.path.realpath(f) not in outputs]  # never empty: a target's name is longer
        pairs = [(f, target_of(f)) for f in usable_images(files, flag="--input")]
        first = {}
        for file, target in pairs:
            if target in first:
                raise UserError(f"--input {first[target]} and {file} would both be written to {target}; "
                                "rename one of them")
            first[target] = file
    else:
        target = Path(output) if output else source.with_name(source.stem + "_x4.png")
        if not target.is_dir() and target.suffix.lower() != ".png":
            raise UserError(f"--output {target} must be a .png file (the upscaled image is written as PNG)")
        pairs, own = [(source, target)], []
    refused = []
    for file, target in pairs:
        try:
            output_file(target, overwrite, inputs=(file,), flag="--output")
        except UserError as error:
            refused.append(str(error))
    if refused:
        more = f" ({len(refused) - 1} more of the outputs too)" if len(refused) > 1 else ""
        raise UserError(refused[0] + more)
    if own:
        print(f"skipped {len(own)} file(s) of --input {source} that are this command's own outputs "
              f"({', '.join(f.name for f in own[:3])}{', ...' if len(own) > 3 else ''})")
    return pairs
