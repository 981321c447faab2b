"""Deterministic procedural voxel shapes for the 3D-GAN chapter: chairs, tables and airplanes.

Each shape is assembled from boxes and cylinders whose proportions are drawn from a seeded generator
(leg count and thickness, seat and back height, table-top form, wing span and sweep, tail, engines, ...),
then rasterised at 32³ or 64³ by testing every voxel centre. Shape `i` of a category depends only on
(category, i, seed), never on the grid size, so the 32³ and 64³ versions show the same objects.

Axes: volume[x, y, z] with z pointing up (the way `common.voxels.render_grid` draws it).

    python datasets/procedural_voxels.py chair 32 --num 16 --out chairs.png   # a look at them
"""
from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

CATEGORIES = ("chair", "table", "airplane")
SIZES = (32, 64)


class _Canvas:
    """A boolean grid in unit coordinates [0, 1]³ with boxes and cylinders painted in."""

    def __init__(self, size: int) -> None:
        self.size = size
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.x, self.y, self.z = centres[:, None, None], centres[None, :, None], centres[None, None, :]
        self.grid = np.zeros((size, size, size), dtype=bool)
        self.min_width = 1.05 / size  # every part at least one voxel thick at any size

    def _span(self, low: float, high: float) -> tuple[float, float]:
        if high - low < self.min_width:  # keep thin parts visible: widen around their centre
            middle = (low + high) / 2
            low, high = middle - self.min_width / 2, middle + self.min_width / 2
        return low, high

    def box(self, x: tuple[float, float], y: tuple[float, float], z: tuple[float, float]) -> None:
        (x0, x1), (y0, y1), (z0, z1) = self._span(*x), self._span(*y), self._span(*z)
        self.grid |= ((self.x >= x0) & (self.x <= x1)) & ((self.y >= y0) & (self.y <= y1)) & \
                     ((self.z >= z0) & (self.z <= z1))

    def cylinder(self, axis: str, centre: tuple[float, float], radius: float, extent: tuple[float, float]) -> None:
        """A cylinder along `axis` ("x", "y" or "z") through `centre` (the other two coordinates, in order)."""
        radius = max(radius, self.min_width / 2)
        along = {"x": self.x, "y": self.y, "z": self.z}[axis]
        a, b = [{"x": self.x, "y": self.y, "z": self.z}[k] for k in "xyz" if k != axis]
        low, high = self._span(*extent)
        self.grid |= (((a - centre[0]) ** 2 + (b - centre[1]) ** 2) <= radius ** 2) & (along >= low) & (along <= high)

    def swept_wing(self, root_x: float, chord: float, tip_chord: float, span: float, sweep: float, z: float,
                   thickness: float, y_centre: float = 0.5) -> None:
        """A tapered, swept slab in the x-y plane, mirrored about y_centre (x runs nose to tail)."""
        offset = np.abs(self.y - y_centre)
        fraction = np.clip(offset / max(span / 2, 1e-6), 0.0, 1.0)
        front = root_x + sweep * offset
        back = front + chord + (tip_chord - chord) * fraction
        z0, z1 = self._span(z - thickness / 2, z + thickness / 2)
        self.grid |= (offset <= span / 2) & (self.x >= front) & (self.x <= np.maximum(back, front + self.min_width)) \
            & (self.z >= z0) & (self.z <= z1)


def _chair(canvas: _Canvas, rng: np.random.Generator) -> None:
    width, depth = rng.uniform(0.45, 0.7), rng.uniform(0.4, 0.6)
    x0, y0 = 0.5 - depth / 2, 0.5 - width / 2
    seat_z, seat_t = rng.uniform(0.35, 0.5), rng.uniform(0.05, 0.09)
    canvas.box((x0, x0 + depth), (y0, y0 + width), (seat_z, seat_z + seat_t))
    back_top = min(0.97, seat_z + seat_t + rng.uniform(0.3, 0.5))
    back_t = rng.uniform(0.04, 0.08)
    if rng.random() < 0.3:  # a back of vertical slats
        slats = int(rng.integers(3, 6))
        for y in np.linspace(y0 + 0.03, y0 + width - 0.03, slats):
            canvas.box((x0, x0 + back_t), (y - 0.025, y + 0.025), (seat_z, back_top))
        canvas.box((x0, x0 + back_t), (y0, y0 + width), (back_top - 0.06, back_top))
    else:
        canvas.box((x0, x0 + back_t), (y0, y0 + width), (seat_z, back_top))
    leg = rng.uniform(0.035, 0.08)
    kind = rng.choice(["four", "four", "three", "pedestal"])
    if kind == "pedestal":  # office chair: a column on a star base
        canvas.cylinder("z", (0.5, 0.5), rng.uniform(0.03, 0.06), (0.08, seat_z))
        arms, reach = int(rng.integers(4, 6)), rng.uniform(0.22, 0.32)
        for angle in np.linspace(0, 2 * np.pi, arms, endpoint=False) + rng.uniform(0, np.pi):
            for r in np.linspace(0, reach, 12):
                cx, cy = 0.5 + r * np.cos(angle), 0.5 + r * np.sin(angle)
                canvas.box((cx - 0.03, cx + 0.03), (cy - 0.03, cy + 0.03), (0.04, 0.09))
    else:
        inset = rng.uniform(0.0, 0.04)
        corners = [(x0 + inset, y0 + inset), (x0 + inset, y0 + width - inset - leg),
                   (x0 + depth - inset - leg, y0 + inset), (x0 + depth - inset - leg, y0 + width - inset - leg)]
        if kind == "three":
            corners = [corners[0], corners[1], (x0 + depth - inset - leg, 0.5 - leg / 2)]
        for cx, cy in corners:
            canvas.box((cx, cx + leg), (cy, cy + leg), (0.03, seat_z))
    if rng.random() < 0.35:  # armrests
        arm_z = seat_z + seat_t + rng.uniform(0.12, 0.2)
        for y in (y0, y0 + width - 0.05):
            canvas.box((x0, x0 + depth), (y, y + 0.05), (arm_z, arm_z + 0.04))
            canvas.box((x0 + depth - 0.06, x0 + depth - 0.01), (y, y + 0.05), (seat_z, arm_z))


def _table(canvas: _Canvas, rng: np.random.Generator) -> None:
    height, top_t = rng.uniform(0.4, 0.7), rng.uniform(0.04, 0.08)
    shape = rng.choice(["rectangle", "rectangle", "square", "round"])
    if shape == "round":
        radius = rng.uniform(0.3, 0.45)
        canvas.cylinder("z", (0.5, 0.5), radius, (height - top_t, height))
        if rng.random() < 0.6:
            canvas.cylinder("z", (0.5, 0.5), rng.uniform(0.04, 0.08), (0.05, height))
            canvas.cylinder("z", (0.5, 0.5), rng.uniform(0.15, 0.3), (0.03, 0.07))
            return
        x0, x1, y0, y1 = 0.5 - radius * 0.65, 0.5 + radius * 0.65, 0.5 - radius * 0.65, 0.5 + radius * 0.65
    else:
        length = rng.uniform(0.7, 0.95)
        width = length if shape == "square" else rng.uniform(0.4, 0.65)
        x0, x1, y0, y1 = 0.5 - length / 2, 0.5 + length / 2, 0.5 - width / 2, 0.5 + width / 2
        canvas.box((x0, x1), (y0, y1), (height - top_t, height))
    leg = rng.uniform(0.04, 0.09)
    inset = rng.uniform(0.0, 0.06)
    for cx, cy in ((x0 + inset, y0 + inset), (x0 + inset, y1 - inset - leg),
                   (x1 - inset - leg, y0 + inset), (x1 - inset - leg, y1 - inset - leg)):
        canvas.box((cx, cx + leg), (cy, cy + leg), (0.03, height))
    if rng.random() < 0.4:  # a shelf or stretchers between the legs
        shelf = rng.uniform(0.1, height * 0.5)
        canvas.box((x0 + inset, x1 - inset), (y0 + inset, y1 - inset), (shelf, shelf + 0.03))


def _airplane(canvas: _Canvas, rng: np.random.Generator) -> None:
    length, radius = rng.uniform(0.75, 0.95), rng.uniform(0.04, 0.07)
    nose, z = 0.5 - length / 2, rng.uniform(0.4, 0.55)
    canvas.cylinder("x", (0.5, z), radius, (nose + radius, nose + length))
    canvas.cylinder("x", (0.5, z), radius * 0.6, (nose, nose + radius))  # a blunt nose
    span, chord = rng.uniform(0.7, 0.97), rng.uniform(0.12, 0.25)
    sweep, taper = rng.uniform(0.0, 0.6), rng.uniform(0.3, 1.0)
    wing_x = nose + length * rng.uniform(0.3, 0.45)
    wing_z = z + rng.choice([-1.0, 0.0, 1.0]) * radius * 0.7  # low, mid or high wing
    canvas.swept_wing(wing_x, chord, chord * taper, span, sweep, wing_z, rng.uniform(0.025, 0.045))
    tail_x = nose + length - rng.uniform(0.1, 0.16)
    canvas.swept_wing(tail_x, 0.09, 0.05, span * rng.uniform(0.3, 0.45), sweep * 0.8, z, 0.03)
    fin_h = rng.uniform(0.12, 0.22)
    for step in np.linspace(0.0, 1.0, 10):  # a swept vertical fin
        fx = tail_x + step * 0.06 + 0.02
        canvas.box((fx, fx + 0.1 * (1 - 0.5 * step)), (0.49, 0.51), (z, z + radius + step * fin_h))
    if rng.random() < 0.7:  # engines under the wings
        pairs = int(rng.integers(1, 3))
        for k in range(pairs):
            offset = span * (0.18 + 0.14 * k)
            ex = wing_x + sweep * offset - 0.05
            for side in (-1, 1):
                canvas.cylinder("x", (0.5 + side * offset, wing_z - 0.04), 0.025, (ex, ex + 0.1))


_BUILDERS: dict[str, Callable[[_Canvas, np.random.Generator], None]] = {
    "chair": _chair, "table": _table, "airplane": _airplane}


def make_shape(category: str, index: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Shape `index` of `category` as a (size, size, size) uint8 array of 0/1."""
    if category not in _BUILDERS:
        raise ValueError(f"unknown category {category!r}; choose from {', '.join(CATEGORIES)}")
    tag = zlib.crc32(category.encode())  # a stable number per category (str hash is salted per process)
    rng = np.random.default_rng([seed, tag, index])
    canvas = _Canvas(size)
    _BUILDERS[category](canvas, rng)
    return canvas.grid.astype(np.uint8)


def make_shapes(category: str, count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """`count` shapes of one category: (count, size, size, size) uint8 0/1, the same on every machine."""
    return np.stack([make_shape(category, i, size, seed) for i in range(count)])


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python datasets/procedural_voxels.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("category", choices=CATEGORIES, metavar="CATEGORY",
                        help="which shapes to draw: %(choices)s")
    parser.add_argument("size", type=int, choices=SIZES, metavar="SIZE", help="voxel grid side: %(choices)s")
    parser.add_argument("--num", type=int, default=16, help="how many shapes to draw (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("procedural_voxels.png"),
                        help="PNG grid of renders to write (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it already exists")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"--num must be at least 1, got {args.num}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from common.errors import UserError
    from datasets.download import refuse_to_overwrite

    try:
        refuse_to_overwrite(args.out, args.overwrite)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from common.images import save_png
    from common.voxels import render_grid

    save_png(args.out, render_grid(make_shapes(args.category, args.num, args.size, args.seed)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
