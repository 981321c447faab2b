"""Voxel training data: the 3DShapeNets `volumetric_data` .mat files (cached), or the embedded procedural shapes.

3DShapeNets layout: <root>/<category>/30/<split>/*.mat, each holding a 30³ array under the key `instance`.
The book's preprocessing: pad by one voxel on every side to 32³, and for 64³ zoom ×2 (nearest neighbour).
Parsing a thousand .mat files takes a while, so the volumes of one category/split/size are kept in one
compressed .npz beside the split folder, rebuilt whenever a file in the folder is added, removed or changed.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from common.errors import UserError

MAT_KEY = "instance"
MAT_SHAPE = (30, 30, 30)


def preprocess(instance: np.ndarray, cube_len: int) -> np.ndarray:
    """30³ occupancy -> (cube_len)³ uint8 0/1: pad 1 to 32³, then ×2 nearest neighbour for 64³."""
    volume = np.pad((np.asarray(instance) > 0).astype(np.uint8), 1)
    if cube_len == 64:
        volume = volume.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    return volume


def read_mat(path: Path, cube_len: int) -> np.ndarray:
    import scipy.io

    try:
        contents = scipy.io.loadmat(path)
    except Exception as error:  # scipy raises several types for a damaged or non-.mat file
        raise UserError(f"cannot read {path} as a MATLAB .mat file ({str(error).splitlines()[0]})") from None
    if MAT_KEY not in contents:
        found = ", ".join(k for k in contents if not k.startswith("__")) or "nothing"
        raise UserError(f"{path} has no '{MAT_KEY}' array (found: {found}); --data expects the 3DShapeNets "
                        "volumetric_data folder")
    instance = np.asarray(contents[MAT_KEY])
    if instance.shape != MAT_SHAPE:
        raise UserError(f"{path} holds an '{MAT_KEY}' of shape {instance.shape}, expected {MAT_SHAPE} "
                        "(3DShapeNets volumetric_data, 30³ voxels)")
    return preprocess(instance, cube_len)


def split_folder(root: str | os.PathLike, category: str, split: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--data {root} does not exist or is not a folder (expected 3DShapeNets volumetric_data)")
    folder = root / category / "30" / split
    if not folder.is_dir():
        categories = sorted(p.name for p in root.iterdir() if (p / "30").is_dir())
        known = f"categories there: {', '.join(categories)}" if categories else \
            "it holds no <category>/30/ folders; is it the volumetric_data folder?"
        raise UserError(f"no folder {folder} for --category {category} --split {split}; {known}")
    return folder


def fingerprint(files: list[Path]) -> str:
    """Changes when a file is added, removed, renamed, resized or rewritten."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/gan-cookbook (~/.cache/gan-cookbook): derived data, safe to delete."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan-cookbook"


def load_shapenet(root: str | os.PathLike, category: str, split: str, cube_len: int,
                  cache_dir: str | os.PathLike | None = None, log=print) -> np.ndarray:
    """All volumes of <root>/<category>/30/<split>/*.mat as (N, cube_len, cube_len, cube_len) uint8 0/1."""
    folder = split_folder(root, category, split)
    files = sorted(folder.glob("*.mat"))
    if not files:
        raise UserError(f"{folder} contains no .mat files")
    key = fingerprint(files)
    # Never beside the data: --data may be read-only or shared, and nothing is ever written under it.
    place = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    cache = Path(cache_dir or default_cache_dir()) / f"shapenet_{place}_{category}_{split}_{cube_len}.npz"
    if cache.exists():
        try:
            with np.load(cache) as saved:
                if str(saved["fingerprint"]) == key:
                    return saved["volumes"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt
    log(f"reading {len(files)} .mat files from {folder} (cached afterwards in {cache})")
    volumes = np.stack([read_mat(path, cube_len) for path in files])
    _write_cache(cache, volumes, key, log)
    return volumes


def _write_cache(cache: Path, volumes: np.ndarray, key: str, log) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp.npz")
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, volumes=volumes, fingerprint=np.array(key))
        os.replace(tmp, cache)
    except OSError as error:  # a read-only data folder: train anyway, just without the cache
        log(f"could not write the cache {cache} ({error.strerror}); the .mat files will be parsed again next time")


def load_volumes(data: str | None, category: str, split: str, cube_len: int, num_shapes: int
                 ) -> np.ndarray:
    """The training volumes: 3DShapeNets when `data` is given, else `num_shapes` procedural shapes."""
    if data:
        return load_shapenet(data, category, split, cube_len)
    from datasets.procedural_voxels import CATEGORIES, make_shapes

    if category not in CATEGORIES:
        raise UserError(f"the embedded shapes come in {', '.join(CATEGORIES)}; --category {category} needs "
                        "--data (the 3DShapeNets volumetric_data folder, see datasets/fetch_shapenet.py)")
    return make_shapes(category, num_shapes, cube_len, seed=0 if split == "train" else 1)
