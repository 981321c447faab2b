"""Draw the embedded procedural data sets into one PNG preview sheet.

    python tools/preview_procedural.py OUT.png                       # the full sheet (about 5 s)
    python tools/preview_procedural.py OUT.png --faces 4 --identities 2 --shapes 2 --sizes 32   # a quick one

Top to bottom: random faces as the chapters draw them (datasets/procedural_faces.py, `make_dataset`), then
identities each drawn at one age per Age-cGAN bucket (one identity per row, youngest on the left), then for
every voxel category and grid size the shapes of datasets/procedural_voxels.py, each as three shaded
projections (front, side, top; nearer voxels are brighter). OUT is never replaced unless --overwrite is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import UserError  # noqa: E402
from datasets.download import refuse_to_overwrite  # noqa: E402

CATEGORIES = ("chair", "table", "airplane")  # datasets.procedural_voxels.CATEGORIES (checked in main)
SIZES = (32, 64)  # datasets.procedural_voxels.SIZES
BACKGROUND = 235  # sheet colour around the panels
TILE = 128  # faces and voxel views are zoomed (nearest neighbour) to about this many pixels


def _grid(tiles, cols: int, pad: int = 2, fill: float = 1.0):
    """Tile (n, h, w, c) images in [0, 1] into one uint8 picture."""
    import numpy as np

    n, h, w, c = tiles.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, np.float32)
    for i, t in enumerate(tiles):
        r, k = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = t
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _zoom(tiles, side: int):
    """Nearest-neighbour zoom of (n, h, w, c) tiles by the integer factor that brings h closest to TILE."""
    import numpy as np

    factor = max(1, round(TILE / side))
    return np.repeat(np.repeat(tiles, factor, axis=1), factor, axis=2)


def voxel_views(vox):
    """Shaded projections of one (L, L, L) volume indexed [x, y, z] with z up (procedural_voxels' axes).

    Returns (3, L, L, 1) in [0, 1]: the front (looking along -x, y across), the side (looking along +y, x
    across) and the top (looking down -z, y across, x down). Brightness falls with the depth of the first
    occupied voxel; empty lines of sight are 0.
    """
    import numpy as np

    vox = np.asarray(vox) > 0
    size = vox.shape[0]
    shade = np.linspace(1.0, 0.35, size, dtype=np.float32)

    def look(v, axis: int):  # along `axis`, from index 0; returns the image over the other two axes
        return np.where(v.any(axis), shade[np.argmax(v, axis)], 0.0)

    front = look(vox[::-1], 0).T[::-1]          # (y, z) -> rows z (up at the top), columns y
    side = look(vox, 1).T[::-1]                  # (x, z) -> rows z, columns x (an airplane's nose on the left)
    top = look(vox[:, :, ::-1], 2)              # (x, y) -> rows x, columns y
    return np.stack([front, side, top]).astype(np.float32)[..., None]


def _caption(panel, text: str):
    """The panel with a line of text above it."""
    import numpy as np
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (panel.shape[1], 16), (BACKGROUND,) * 3)
    ImageDraw.Draw(strip).text((2, 2), text, fill=(20, 20, 20))
    return np.concatenate([np.asarray(strip), panel])


def _stack(panels, gap: int = 8):
    """Panels (h, w, 3) uint8 one under the other, left-aligned on the sheet colour."""
    import numpy as np

    width = max(p.shape[1] for p in panels) + 2 * gap
    height = sum(p.shape[0] for p in panels) + gap * (len(panels) + 1)
    sheet = np.full((height, width, 3), BACKGROUND, np.uint8)
    y = gap
    for p in panels:
        sheet[y:y + p.shape[0], gap:gap + p.shape[1]] = p
        y += p.shape[0] + gap
    return sheet


def build_sheet(faces: int, identities: int, shapes: int, sizes: Sequence[int], categories: Sequence[str],
                face_size: int, seed: int):
    """The preview sheet as an (H, W, 3) uint8 array."""
    import numpy as np

    from datasets import procedural_faces as pf
    from datasets import procedural_voxels as pv

    panels = []
    if faces:
        imgs, _, _ = pf.make_dataset(faces, seed=seed, size=face_size)
        cols = int(np.ceil(np.sqrt(faces)))
        panels.append(_caption(_grid(_zoom((imgs + 1) / 2, face_size), cols),
                               f"{faces} random faces ({face_size}x{face_size}, seed {seed})"))
    if identities:
        ages = np.array([(low + high) // 2 for low, high in pf.AGE_BUCKETS], np.float32)
        assert list(pf.age_to_class(ages)) == list(range(len(pf.AGE_BUCKETS)))
        people = pf.sample_identities(identities, seed=seed + 5)
        repeated = {key: np.repeat(value, len(ages), axis=0) for key, value in people.items()}
        drawn = pf.render_faces(repeated, np.tile(ages, identities), face_size)
        panels.append(_caption(_grid(_zoom((drawn + 1) / 2, face_size), len(ages)),
                               "identities at ages " + ", ".join(str(int(a)) for a in ages)))
    if shapes:
        for category in categories:
            for size in sizes:
                vox = pv.make_shapes(category, shapes, size=size, seed=seed)
                tiles = np.concatenate([voxel_views(v) for v in vox])
                per_row = 3 * min(shapes, 4)
                grid = _grid(np.repeat(_zoom(tiles, size), 3, -1), per_row, pad=2, fill=0.25)
                panels.append(_caption(grid, f"{shapes} {category}s at {size}^3: front, side, top"))
    return _stack(panels)


def write_png(picture, out: Path, overwrite: bool) -> None:
    """Writes through a temporary file; without `overwrite` a file that appeared at `out` meanwhile is kept."""
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(picture).save(tmp, format="PNG")
        if overwrite:
            os.replace(tmp, out)
        else:
            try:
                os.link(tmp, out)  # fails if `out` exists: never replaces it
            except FileExistsError:
                raise UserError(f"{out} already exists; pass --overwrite to replace it, or choose another name") \
                    from None
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/preview_procedural.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, metavar="OUT", help="the PNG file to write")
    parser.add_argument("--faces", type=int, default=64, help="random faces to draw; 0 leaves them out "
                                                              "(default: %(default)s)")
    parser.add_argument("--identities", type=int, default=8,
                        help="identities to draw at the six bucket ages; 0 leaves them out (default: %(default)s)")
    parser.add_argument("--shapes", type=int, default=6,
                        help="voxel shapes per category and size; 0 leaves them out (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", choices=SIZES, default=list(SIZES), metavar="SIZE",
                        help="voxel grid sizes to draw, from %(choices)s (default: 32 64)")
    parser.add_argument("--categories", nargs="+", choices=CATEGORIES, default=list(CATEGORIES),
                        metavar="CATEGORY", help="voxel categories to draw, from %(choices)s (default: all)")
    parser.add_argument("--face-size", type=int, default=64, help="face image side in pixels, 16 to 256 "
                                                                  "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the faces and shapes (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already exists")
    args = parser.parse_args(argv)
    for flag in ("faces", "identities", "shapes"):
        if not 0 <= getattr(args, flag) <= 1024:
            parser.error(f"--{flag} must be between 0 and 1024, got {getattr(args, flag)}")
    if not 16 <= args.face_size <= 256:
        parser.error(f"--face-size must be between 16 and 256, got {args.face_size}")
    if not (args.faces or args.identities or args.shapes):
        parser.error("--faces, --identities and --shapes are all 0: nothing to draw")
    try:
        out = refuse_to_overwrite(args.out, args.overwrite)  # before any drawing
        from datasets import procedural_voxels as pv

        assert pv.CATEGORIES == CATEGORIES and pv.SIZES == SIZES, "update CATEGORIES/SIZES here"
        sheet = build_sheet(args.faces, args.identities, args.shapes, args.sizes, args.categories,
                            args.face_size, args.seed)
        write_png(sheet, out, args.overwrite)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
