"""MNIST in the forms users have it: Keras' mnist.npz, the four IDX files (raw or .gz), or a digit folder."""
from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from common.data.images import load_folder_array
from common.errors import UserError

_IDX_NAMES = ("train-images-idx3-ubyte", "train-images.idx3-ubyte")


def load_digits(path: str | os.PathLike, log: Callable[[str], None] = print, flag: str = "--data") -> np.ndarray:
    """The training digits as uint8 (N, 28, 28)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{flag} {path} does not exist; expected mnist.npz, a folder with the MNIST IDX "
                        "files, or a folder of digit images")
    if path.is_file():
        if path.suffix != ".npz":
            raise UserError(f"{flag} {path} is not an .npz file; expected mnist.npz (with x_train), "
                            "a folder with the MNIST IDX files, or a folder of digit images")
        digits = _from_npz(path, flag)
    else:
        idx = [path / (name + ext) for name in _IDX_NAMES for ext in ("", ".gz") if (path / (name + ext)).exists()]
        digits = _from_idx(idx[0], flag) if idx else load_folder_array(path, 28, 1, log, flag)[..., 0]
    if digits.ndim != 3 or digits.shape[1:] != (28, 28) or len(digits) == 0:
        raise UserError(f"{flag} {path}: expected digits of shape (N, 28, 28), found {digits.shape}")
    return digits


def _from_npz(path: Path, flag: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in ("x_train", "x"):
                if key in archive.files:
                    return _as_uint8(archive[key])
            found = ", ".join(archive.files) or "nothing"
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UserError(f"{flag} {path} is not a readable .npz file ({error})") from None
    raise UserError(f"{flag} {path} has no x_train array (found: {found}); expected Keras' mnist.npz")


def _as_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
        array = array * 255.0  # some copies store pixels as 0..1 floats
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _from_idx(path: Path, flag: str) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise UserError(f"{flag}: cannot read {path} ({error})") from None
    magic = int.from_bytes(data[:4], "big") if len(data) >= 16 else 0
    if magic != 2051:
        raise UserError(f"{flag}: {path} is not an MNIST image file (IDX magic 2051 expected, found {magic})")
    count, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    if len(data) < 16 + count * rows * cols:
        raise UserError(f"{flag}: {path} is truncated ({len(data)} bytes for {count} images of {rows}x{cols})")
    return np.frombuffer(data, np.uint8, count * rows * cols, offset=16).reshape(count, rows, cols)
