"""Write preview grids of the procedural data sets: python tools/preview_procedural.py OUT_DIR.

faces_grid.png   8x8 random faces          faces_ages.png  8 identities x 6 ages (one per bucket)
voxels_<category>.png  per shape: max-projections along the up, depth and width axes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import procedural_faces as pf  # noqa: E402
from datasets import procedural_voxels as pv  # noqa: E402


def _grid(tiles: np.ndarray, cols: int, pad: int = 2, fill: float = 1.0) -> np.ndarray:
    """Tile (n, h, w, c) images in [0, 1] into one uint8 picture."""
    n, h, w, c = tiles.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, np.float32)
    for i, t in enumerate(tiles):
        r, k = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = t
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _save(a: np.ndarray, path: Path, zoom: int) -> None:
    img = Image.fromarray(a.squeeze())
    img.resize((img.width * zoom, img.height * zoom), Image.NEAREST).save(path)
    print("wrote", path)


def _voxel_views(vox: np.ndarray) -> np.ndarray:
    """Shaded projections of (L, L, L) voxels indexed [x, y(up), z]: front, side, top."""
    L = vox.shape[0]
    depth = np.linspace(1.0, 0.35, L, dtype=np.float32)
    # Front view looks along +z, so the nearest occupied voxel sets the brightness.
    def view(v: np.ndarray) -> np.ndarray:  # v: (a, b, depth) -> (b, a) image, up is b
        hit = v.any(-1)
        first = np.argmax(v, -1)
        return np.where(hit, depth[first], 0.0).T[::-1]
    front = view(vox)                                   # x across, y up
    side = view(vox.transpose(2, 1, 0))                 # z across, y up
    top = np.where(vox.any(1), depth[::-1][np.argmax(vox[:, ::-1, :], 1)], 0.0).T  # x across, z down
    return np.stack([front, side, top])[..., None]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    imgs, ages, cls = pf.make_dataset(64, seed=0)
    _save(_grid((imgs + 1) / 2, 8), out / "faces_grid.png", 3)
    ids = pf.sample_identities(8, seed=5)
    rep = {k: np.repeat(v, 6, axis=0) for k, v in ids.items()}
    ages6 = np.tile(np.array([8, 24, 35, 45, 55, 78], np.float32), 8)
    _save(_grid((pf.render_faces(rep, ages6) + 1) / 2, 6), out / "faces_ages.png", 3)
    for cat in pv.CATEGORIES:
        for L in (32, 64):
            vox = pv.make_shapes(cat, 12, seed=1, cube_len=L)
            tiles = np.concatenate([_voxel_views(v) for v in vox])
            _save(_grid(np.repeat(tiles, 3, -1), 6, pad=1, fill=0.25), out / f"voxels_{cat}_{L}.png", 4 if L == 32 else 2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
