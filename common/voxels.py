"""Voxel volumes: matplotlib renders and grids of them, Wavefront .obj export, and IoU between shapes.

A volume is an array (X, Y, Z) or (X, Y, Z, 1) of occupancies in [0, 1]; z points up in the renders.
Everything thresholds at 0.5 unless told otherwise.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np


def binarize(volumes: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Occupancy above `threshold` as bool, with a trailing channel axis of 1 dropped."""
    volumes = np.asarray(volumes)
    if volumes.ndim >= 4 and volumes.shape[-1] == 1:
        volumes = volumes[..., 0]
    return volumes > threshold


def downsample(volume: np.ndarray, max_side: int) -> np.ndarray:
    """A boolean volume max-pooled by an integer factor until its side is at most `max_side` (for quick renders)."""
    factor = math.ceil(volume.shape[0] / max_side)
    if factor <= 1:
        return volume
    side = volume.shape[0] // factor
    trimmed = volume[:side * factor, :side * factor, :side * factor]
    return trimmed.reshape(side, factor, side, factor, side, factor).any(axis=(1, 3, 5))


# --- renders ------------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# brightness of the six face directions (+x, -x, +y, -y, +z, -z): a fixed light from above and the front
_SHADE = np.array([0.80, 0.55, 0.65, 0.90, 1.00, 0.40])


def draw_voxels(axis, volume: np.ndarray, threshold: float = 0.5, color: tuple[float, float, float] = (0.31, 0.53, 0.78),
                title: str | None = None, elev: float = 25.0, azim: float = -55.0) -> None:
    """Draws one volume on a 3-D axis made with `figure.add_subplot(..., projection="3d")`.

    Only the exposed voxel faces go into a single Poly3DCollection, shaded by direction: the same picture as
    `axis.voxels(...)`, which makes one collection per voxel and takes minutes for a grid of shapes.
    """
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    filled = binarize(volume, threshold)
    quads, sides = exposed_faces(filled)
    if len(quads):
        colors = np.clip(np.asarray(color)[None, :] * _SHADE[sides][:, None], 0, 1)
        axis.add_collection3d(Poly3DCollection(quads.astype(np.float32), facecolors=colors,
                                               edgecolors=colors * 0.7, linewidths=0.1))
    side = max(filled.shape)
    axis.set_xlim(0, side)
    axis.set_ylim(0, side)
    axis.set_zlim(0, side)
    axis.set_box_aspect((1, 1, 1))
    axis.view_init(elev=elev, azim=azim)
    axis.set_axis_off()
    if title:
        axis.set_title(title, fontsize=7, pad=0)


def render_grid(volumes: np.ndarray, columns: int | None = None, threshold: float = 0.5, cell_inches: float = 1.6,
                dpi: int = 80, max_side: int | None = None, titles: list[str] | None = None) -> np.ndarray:
    """Renders N volumes side by side; returns an RGB uint8 picture (H, W, 3).

    Volumes larger than `max_side` are max-pooled down first (a quicker, coarser picture); None keeps them whole.
    """
    plt = _pyplot()
    volumes = binarize(volumes, threshold)
    if volumes.ndim == 3:
        volumes = volumes[None]
    count = len(volumes)
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    figure = plt.figure(figsize=(columns * cell_inches, rows * cell_inches), dpi=dpi)
    try:
        for index, volume in enumerate(volumes):
            axis = figure.add_subplot(rows, columns, index + 1, projection="3d")
            if max_side:
                volume = downsample(volume, max_side)
            draw_voxels(axis, volume, title=titles[index] if titles else None)
        figure.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0, hspace=0)
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(figure)


def interpolate_latents(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    """`steps` latents on the straight line from `start` to `end` (both ends included)."""
    weights = np.linspace(0.0, 1.0, steps, dtype=np.float32).reshape(-1, *([1] * np.ndim(start)))
    return ((1.0 - weights) * start[None] + weights * end[None]).astype(np.float32)


# --- mesh export --------------------------------------------------------------------------------------------

def exposed_faces(volume: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(quads (F, 4, 3) int corner points, sides (F,) 0..5) of the cube faces between filled and empty voxels.

    Sides are +x, -x, +y, -y, +z, -z; every quad winds counter-clockwise seen from outside (normals point out).
    """
    filled = binarize(volume, threshold)
    if filled.ndim != 3:
        raise ValueError(f"expected one volume (X, Y, Z), got shape {filled.shape}")
    padded = np.pad(filled, 1)
    quads, sides = [], []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for side, direction in enumerate((1, -1)):
            neighbour = np.roll(padded, -direction, axis=axis)[1:-1, 1:-1, 1:-1]
            cells = np.argwhere(filled & ~neighbour)  # (n, 3): voxels with this face exposed
            if not len(cells):
                continue
            base = cells.copy()
            if direction == 1:
                base[:, axis] += 1
                order = ((0, 0), (1, 0), (1, 1), (0, 1))  # u x v = +axis: counter-clockwise from outside
            else:
                order = ((0, 0), (0, 1), (1, 1), (1, 0))
            quad = np.repeat(base[:, None, :], 4, axis=1)
            for k, (du, dv) in enumerate(order):
                quad[:, k, u] += du
                quad[:, k, v] += dv
            quads.append(quad)
            sides.append(np.full(len(cells), 2 * axis + side))
    if not quads:
        return np.zeros((0, 4, 3), np.int64), np.zeros((0,), np.int64)
    return np.concatenate(quads), np.concatenate(sides)


def voxel_mesh(volume: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float, quads (F, 4) int, 0-based) of the shape's exposed faces, corners shared.

    Faces between two filled voxels are left out, so a solid shape costs its surface only.
    """
    quads, _ = exposed_faces(volume, threshold)
    if not len(quads):
        return np.zeros((0, 3), np.float32), np.zeros((0, 4), np.int64)
    dims = quads.reshape(-1, 3).max(axis=0) + 1
    keys = (quads[..., 0] * dims[1] + quads[..., 1]) * dims[2] + quads[..., 2]
    unique, inverse = np.unique(keys.ravel(), return_inverse=True)
    vertices = np.stack([unique // (dims[1] * dims[2]), (unique // dims[2]) % dims[1], unique % dims[2]], axis=1)
    return vertices.astype(np.float32), inverse.reshape(-1, 4)


def write_obj(path: str | os.PathLike, volume: np.ndarray, threshold: float = 0.5) -> tuple[int, int]:
    """Writes a Wavefront .obj of the shape's exposed faces (one unit per voxel); returns (vertices, faces)."""
    vertices, quads = voxel_mesh(volume, threshold)
    lines = [f"# {len(vertices)} vertices, {len(quads)} faces: exposed voxel faces (threshold {threshold})"]
    lines += [f"v {x:g} {y:g} {z:g}" for x, y, z in vertices]
    lines += [f"f {a} {b} {c} {d}" for a, b, c, d in quads + 1]  # .obj counts from 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return len(vertices), len(quads)


# --- IoU ----------------------------------------------------------------------------------------------------

def iou_matrix(a: np.ndarray, b: np.ndarray, threshold: float = 0.5, chunk: int = 256) -> np.ndarray:
    """Intersection over union of every shape in `a` (N, ...) with every shape in `b` (M, ...): (N, M).

    Two empty shapes count as identical (IoU 1).
    """
    a = binarize(a, threshold).reshape(len(a), -1).astype(np.float32)
    b_all = binarize(b, threshold).reshape(len(b), -1)
    size_a = a.sum(axis=1)
    out = np.empty((len(a), len(b_all)), np.float32)
    for start in range(0, len(b_all), chunk):
        block = b_all[start:start + chunk].astype(np.float32)
        intersection = a @ block.T
        union = size_a[:, None] + block.sum(axis=1)[None, :] - intersection
        out[:, start:start + chunk] = np.where(union > 0, intersection / np.maximum(union, 1.0), 1.0)
    return out


def nearest_iou(samples: np.ndarray, references: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """For each sample, the IoU with its closest reference shape: (N,)."""
    return iou_matrix(samples, references, threshold).max(axis=1)


def mean_pairwise_iou(samples: np.ndarray, threshold: float = 0.5) -> float:
    """Mean IoU over all pairs of distinct samples (high means the samples look alike: mode collapse)."""
    if len(samples) < 2:
        return float("nan")
    matrix = iou_matrix(samples, samples, threshold)
    off_diagonal = ~np.eye(len(samples), dtype=bool)
    return float(matrix[off_diagonal].mean())


def piece_sizes(volumes: np.ndarray, threshold: float = 0.5) -> list[np.ndarray]:
    """Per volume: the voxel counts of its 26-connected pieces (faces, edges and corners touch), largest first;
    empty for an empty volume."""
    from scipy import ndimage

    full = np.ones((3, 3, 3), bool)
    sizes = []
    for volume in binarize(volumes, threshold):
        labels, count = ndimage.label(volume.reshape(volume.shape[:3]), structure=full)
        sizes.append(np.sort(np.bincount(labels.ravel())[1:])[::-1] if count else np.zeros(0, np.int64))
    return sizes


def debris_fractions(volumes: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per volume: the share of occupied voxels outside its largest 26-connected piece (loose voxels and
    floating bits; 0 for one solid piece, and for an empty volume)."""
    return np.array([1.0 - pieces[0] / pieces.sum() if len(pieces) > 1 else 0.0
                     for pieces in piece_sizes(volumes, threshold)], np.float64)


def one_piece_fractions(volumes: np.ndarray, threshold: float = 0.5) -> float:
    """The share of volumes that are exactly one 26-connected piece: a shape with no loose voxel at all (an empty
    volume is not). debris_fraction weighs the loose voxels; this counts the shapes a viewer sees as clean."""
    return float(np.mean([len(pieces) == 1 for pieces in piece_sizes(volumes, threshold)]))


def occupancy_by_height(volumes: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """One volume or a batch -> the mean occupancy of each horizontal slice, bottom to top (z, the renders'
    vertical axis)."""
    filled = binarize(volumes, threshold)
    return filled.reshape(-1, filled.shape[-1]).mean(axis=0)


def height_scores(samples: np.ndarray, references: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Where the generated voxels sit in height against the references: a sampler can lower its loose-voxel count
    by dropping thin parts (a chair's legs), and these show it.

    `height_profile_distance`: the total-variation distance between the two occupancy-by-height distributions
    (0: the material at the same heights, 1: none at the same heights). `lowest_quarter_vs_training`: the samples'
    mean occupancy in the lowest quarter of the references' height span (from their lowest to their highest
    occupied slice: legs and bases, whether the data stand on the grid's floor or are centred in it) over the
    references' (1: as many voxels there per shape as the data; more material overall also raises it). Both
    are nan where a side has no occupied voxel at all (the ratio is 0 for empty samples).
    """
    generated, reference = occupancy_by_height(samples, threshold), occupancy_by_height(references, threshold)
    scores = {"height_profile_distance": float("nan"), "lowest_quarter_vs_training": float("nan")}
    if not reference.sum():
        return scores
    if generated.sum():
        scores["height_profile_distance"] = float(0.5 * np.abs(generated / generated.sum()
                                                                 - reference / reference.sum()).sum())
    occupied = np.flatnonzero(reference)
    bottom = occupied[0]
    band = slice(bottom, bottom + max(1, (occupied[-1] - bottom + 1) // 4))
    scores["lowest_quarter_vs_training"] = float(generated[band].sum() / reference[band].sum())
    return scores


def shape_metrics(samples: np.ndarray, references: np.ndarray, novelty_below: float = 0.9,
                  threshold: float = 0.5) -> dict[str, float]:
    """The 3D-GAN chapter's scores of generated shapes against the training shapes."""
    nearest = nearest_iou(samples, references, threshold)
    filled = binarize(samples, threshold).reshape(len(samples), -1).mean(axis=1)
    return {
        "nearest_train_iou_mean": float(nearest.mean()),
        "novel_fraction": float((nearest < novelty_below).mean()),
        "pairwise_iou_mean": mean_pairwise_iou(samples, threshold),
        "occupancy_mean": float(filled.mean()),
        "empty_fraction": float((filled == 0).mean()),
        "debris_fraction": float(debris_fractions(samples, threshold).mean()),
        "debris_fraction_training": float(debris_fractions(references, threshold).mean()),
        "one_piece_fraction": one_piece_fractions(samples, threshold),
        "one_piece_fraction_training": one_piece_fractions(references, threshold),
        **height_scores(samples, references, threshold),
    }
