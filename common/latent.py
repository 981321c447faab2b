"""Latent-space exploration for any unconditional generator: `--stage explore`.

Pure functions (numpy, checked by tests/test_latent.py):
  latent_for_seed / latents_for_seeds  the latent vector a seed stands for (so every grid can be remade)
  lerp, slerp                          points between two latents, linear or along the great circle
  interpolate                          a path through two or more latents
  arithmetic                           A + B, |A - B| and A * B (elementwise) of two latents
  sweep                                one dimension of fixed latents swept over a range

Rendering (needs the generator):
  explore_stage(run, generator, Exploration)  interpolation strips, arithmetic rows and one sweep grid per dimension
                                       as PNGs under <run>/explore/ and as TensorBoard images
  latent_walk_gif(generator, path, ...)  a closed walk through several latents as an animated GIF plus a strip

A chapter adds the flags with `add_flags(parser)` and calls `explore_stage` for `--stage explore`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from common.cli import int_at_least, non_negative_int, positive_int
from common.errors import UserError

if TYPE_CHECKING:  # importable before TensorFlow (for a quick --help)
    import keras

    from common.run import Run

METHODS = ("linear", "spherical")
OPERATIONS = ("A+B", "|A-B|", "A*B")


# --- pure latent math ----------------------------------------------------------------------------------

def latent_for_seed(seed: int, latent_dim: int) -> np.ndarray:
    """The standard-normal latent (float32, shape (latent_dim,)) that `seed` names."""
    return np.random.default_rng(int(seed)).standard_normal(latent_dim).astype(np.float32)


def latents_for_seeds(seeds: Sequence[int], latent_dim: int) -> np.ndarray:
    return np.stack([latent_for_seed(s, latent_dim) for s in seeds]) if len(seeds) else np.zeros((0, latent_dim),
                                                                                                  np.float32)


def _fractions(t) -> np.ndarray:
    return np.atleast_1d(np.asarray(t, np.float64))


def lerp(a: np.ndarray, b: np.ndarray, t) -> np.ndarray:
    """(1 - t) a + t b for each t: shape (len(t), dim)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = _fractions(t)[:, None]
    return ((1.0 - t) * a + t * b).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t) -> np.ndarray:
    """Spherical interpolation (Shoemake 1985; White 2016 for GAN latents): along the great circle from a to b.

    The angle is taken between the directions of a and b; the norm is interpolated linearly, so the path keeps
    the typical norm of Gaussian latents instead of cutting through the low-density middle of the ball. Nearly
    parallel (or zero) vectors fall back to `lerp`.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = _fractions(t)[:, None]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return lerp(a, b, t[:, 0])
    ua, ub = a / na, b / nb
    omega = np.arccos(np.clip(ua @ ub, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return lerp(a, b, t[:, 0])
    direction = (np.sin((1.0 - t) * omega) * ua + np.sin(t * omega) * ub) / np.sin(omega)
    return (direction * ((1.0 - t) * na + t * nb)).astype(np.float32)


def interpolate(latents: np.ndarray, steps: int, method: str = "spherical", closed: bool = False) -> np.ndarray:
    """A path through latents[0], latents[1], ... with `steps` points per segment, ends included, no repeats.

    `closed` adds a segment back to latents[0] and drops the final repeat (a loop for animations).
    Returns (segments * (steps - 1) + 1 - closed, dim).
    """
    latents = np.asarray(latents, np.float32)
    if latents.ndim != 2 or len(latents) < 2:
        raise UserError(f"interpolation needs at least two latents, got shape {latents.shape}")
    if steps < 2:
        raise UserError(f"interpolation needs at least 2 steps per segment, got {steps}")
    if method not in METHODS:
        raise UserError(f"interpolation method must be one of {', '.join(METHODS)}, got {method!r}")
    points = list(latents) + ([latents[0]] if closed else [])
    between = lerp if method == "linear" else slerp
    t = np.linspace(0.0, 1.0, steps)
    path = [between(a, b, t)[:-1] for a, b in zip(points[:-1], points[1:])]
    if not closed:
        path.append(points[-1][None])
    return np.concatenate(path).astype(np.float32)


def arithmetic(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """{"A+B": a + b, "|A-B|": |a - b|, "A*B": a * b (elementwise)}, each of a's shape, float32."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape:
        raise UserError(f"latent arithmetic needs two latents of one shape, got {a.shape} and {b.shape}")
    return {"A+B": a + b, "|A-B|": np.abs(a - b), "A*B": a * b}


def sweep(base: np.ndarray, dim: int, values: Sequence[float]) -> np.ndarray:
    """Copies of each base latent with coordinate `dim` set to each value: (len(base), len(values), latent_dim)."""
    base = np.atleast_2d(np.asarray(base, np.float32))
    if not 0 <= dim < base.shape[1]:
        raise UserError(f"latent dimension {dim} does not exist; the latent has {base.shape[1]} (0..{base.shape[1] - 1})")
    out = np.repeat(base[:, None, :], len(values), axis=1)
    out[:, :, dim] = np.asarray(values, np.float32)[None, :]
    return out


# --- rendering ------------------------------------------------------------------------------------------

# add_flags' destinations: with the seed the defaults start from, what --stage explore reads
EXPLORE_FLAGS = ("interpolate_seeds", "interpolate_steps", "arithmetic_seeds", "sweep_dims", "sweep_range",
                 "sweep_steps", "sweep_rows")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The `--stage explore` flags (seeds, steps, sweep dimensions and range)."""
    group = parser.add_argument_group("latent-space exploration (--stage explore)")
    group.add_argument("--interpolate-seeds", type=non_negative_int, nargs="+", default=None, metavar="SEED",
                       help="latents to interpolate through, by seed (default: --seed, --seed+1, --seed+2)")
    group.add_argument("--interpolate-steps", type=int_at_least(2), default=10, metavar="N",
                       help="images per interpolation segment, both ends included")
    group.add_argument("--arithmetic-seeds", type=non_negative_int, nargs="+", default=None, metavar="SEED",
                       help="pairs of seeds A B [A B ...] for A+B, |A-B|, A*B (default: three pairs after --seed)")
    group.add_argument("--sweep-dims", type=non_negative_int, nargs="+", default=None, metavar="D",
                       help="latent dimensions to sweep, one grid each (default: 0 1 2 3)")
    group.add_argument("--sweep-range", type=float, nargs=2, default=(-3.0, 3.0), metavar=("LOW", "HIGH"),
                       help="the values a swept dimension takes")
    group.add_argument("--sweep-steps", type=int_at_least(2), default=9, metavar="N", help="columns of a sweep grid")
    group.add_argument("--sweep-rows", type=positive_int, default=6, metavar="N",
                       help="fixed latents (rows) per sweep grid, from seeds --seed, --seed+1, ...")


@dataclasses.dataclass(frozen=True)
class Exploration:
    """What `--stage explore` draws (add_flags' flags; None: the defaults around the run's seed)."""

    seed: int = 0
    interpolate_seeds: tuple[int, ...] | None = None
    interpolate_steps: int = 10
    arithmetic_seeds: tuple[int, ...] | None = None
    sweep_dims: tuple[int, ...] | None = None
    sweep_range: tuple[float, float] = (-3.0, 3.0)
    sweep_steps: int = 9
    sweep_rows: int = 6

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Exploration":
        def tupled(value):
            return None if value is None else tuple(value)

        return cls(seed=int(getattr(args, "seed", 0)), interpolate_seeds=tupled(args.interpolate_seeds),
                   interpolate_steps=args.interpolate_steps, arithmetic_seeds=tupled(args.arithmetic_seeds),
                   sweep_dims=tupled(args.sweep_dims), sweep_range=tuple(args.sweep_range),
                   sweep_steps=args.sweep_steps, sweep_rows=args.sweep_rows)


def check_unconditional(generator: "keras.Model") -> int:
    """The latent size of a one-input generator; a UserError for conditional ones (two or more inputs)."""
    inputs = generator.inputs
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        shapes = ", ".join(str(tuple(i.shape[1:])) for i in inputs)
        raise UserError(f"--stage explore needs an unconditional generator with one latent input; "
                        f"{generator.name} takes {len(inputs)} inputs ({shapes}), e.g. a label as well")
    return int(inputs[0].shape[-1])


def _generate(generator: "keras.Model", latents: np.ndarray) -> np.ndarray:
    images = generator.predict(np.asarray(latents, np.float32), batch_size=64, verbose=0)
    return np.asarray(images, np.float32)


def _strip_picture(rows: list[np.ndarray]) -> np.ndarray:
    from common.images import make_grid

    columns = max(len(r) for r in rows)
    shape = rows[0].shape[1:]
    padded = [np.concatenate([r, np.ones((columns - len(r), *shape), np.float32)]) for r in rows]
    return make_grid(np.concatenate(padded), columns)


def explore_stage(run: "Run", generator: "keras.Model", args: Exploration,
                  log: Callable[[str], None] = print) -> dict[str, list[str]]:
    """Writes <run>/explore/{interpolation_linear,interpolation_spherical,arithmetic,sweep_dim<D>}.png,
    explore/seeds.json and TensorBoard images (explore/...); returns {kind: [paths]}."""
    from common.images import save_png
    from common.tensorboard import TensorBoardWriter

    latent_dim = check_unconditional(generator)
    seed = args.seed
    inter_seeds = list(args.interpolate_seeds or [seed, seed + 1, seed + 2])
    arith_seeds = list(args.arithmetic_seeds or range(seed + 10, seed + 16))
    dims = list(args.sweep_dims if args.sweep_dims is not None else range(min(4, latent_dim)))
    if len(inter_seeds) < 2:
        raise UserError("--interpolate-seeds needs at least two seeds")
    if len(arith_seeds) < 2 or len(arith_seeds) % 2:
        raise UserError(f"--arithmetic-seeds takes pairs A B [A B ...], got {len(arith_seeds)} seeds")
    for d in dims:
        if not 0 <= d < latent_dim:
            raise UserError(f"--sweep-dims {d} does not exist; the latent has {latent_dim} dimensions (0..{latent_dim - 1})")
    if args.sweep_steps < 2 or args.sweep_rows < 1 or args.interpolate_steps < 2:
        raise UserError("--sweep-steps and --interpolate-steps must be at least 2, --sweep-rows at least 1")

    out = Path(run.root) / "explore"
    writer = TensorBoardWriter(run)
    step = run.epochs_trained()
    written: dict[str, list[str]] = {"interpolation": [], "arithmetic": [], "sweep": []}

    def emit(kind: str, name: str, picture: np.ndarray) -> None:
        path = save_png(out / f"{name}.png", picture)
        writer.image(f"explore/{name}", picture, step)
        written[kind].append(str(path))

    ends = latents_for_seeds(inter_seeds, latent_dim)
    for method in METHODS:
        path = interpolate(ends, args.interpolate_steps, method)
        emit("interpolation", f"interpolation_{method}", _strip_picture([_generate(generator, path)]))

    pairs = [(arith_seeds[i], arith_seeds[i + 1]) for i in range(0, len(arith_seeds), 2)]
    rows = []
    for a_seed, b_seed in pairs:
        a, b = latent_for_seed(a_seed, latent_dim), latent_for_seed(b_seed, latent_dim)
        results = arithmetic(a, b)
        rows.append(_generate(generator, np.stack([a, b, *(results[o] for o in OPERATIONS)])))
    emit("arithmetic", "arithmetic", _strip_picture(rows))

    base_seeds = list(range(seed, seed + args.sweep_rows))
    base = latents_for_seeds(base_seeds, latent_dim)
    values = np.linspace(args.sweep_range[0], args.sweep_range[1], args.sweep_steps)
    for d in dims:
        grid = sweep(base, d, values)
        images = _generate(generator, grid.reshape(-1, latent_dim))
        emit("sweep", f"sweep_dim{d:03d}", _strip_picture(list(images.reshape(len(base), len(values),
                                                                               *images.shape[1:]))))

    record = {"latent_dim": latent_dim, "latent": "standard normal from numpy.random.default_rng(seed)",
              "interpolation": {"seeds": inter_seeds, "steps_per_segment": args.interpolate_steps,
                                "methods": list(METHODS)},
              "arithmetic": {"pairs": pairs, "columns": ["A", "B", *OPERATIONS]},
              "sweep": {"dims": dims, "row_seeds": base_seeds, "values": [float(v) for v in values]},
              "files": written}
    (out / "seeds.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"explore: latents are numpy.random.default_rng(seed).standard_normal({latent_dim})")
    log(f"  interpolation seeds {' '.join(map(str, inter_seeds))} ({args.interpolate_steps} per segment; "
        f"linear and spherical): {', '.join(written['interpolation'])}")
    log(f"  arithmetic pairs {' '.join(f'{a},{b}' for a, b in pairs)} (columns A, B, A+B, |A-B|, A*B): "
        f"{written['arithmetic'][0]}")
    log(f"  sweeps of dimensions {' '.join(map(str, dims))} over [{values[0]:g}, {values[-1]:g}], rows from seeds "
        f"{base_seeds[0]}..{base_seeds[-1]}: {out}/sweep_dim*.png")
    log(f"  seeds and files recorded in {out / 'seeds.json'}; TensorBoard: explore/* images")
    return written


def latent_walk_gif(generator: "keras.Model", path: str | os.PathLike, seeds: Sequence[int], steps: int = 16,
                    method: str = "spherical", frame_ms: int = 80, min_side: int = 128,
                    strip_every: int | None = None, log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """A closed walk through the seeds' latents: an animated GIF (looping) and a PNG strip beside it.

    Frames are upscaled (nearest neighbour) to at least `min_side` pixels. The strip shows every
    `strip_every`-th frame (default: the latents themselves and `steps // 4` points between).
    Returns (gif path, strip path).
    """
    from PIL import Image

    from common.images import save_png, to_uint8

    latent_dim = check_unconditional(generator)
    if len(seeds) < 2:
        raise UserError("a latent walk needs at least two seeds")
    walk = interpolate(latents_for_seeds(seeds, latent_dim), steps, method, closed=True)
    images = _generate(generator, walk)
    frames = to_uint8(images)
    if frames.shape[-1] == 1:
        frames = frames[..., 0]
    scale = max(1, -(-min_side // frames.shape[1]))
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = [Image.fromarray(f) for f in frames]
    tmp = path.with_name(f".{path.name}.tmp")
    pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)
    os.replace(tmp, path)
    every = strip_every or max(1, (steps - 1) // 4)
    strip = save_png(path.with_suffix(".png"), _strip_picture([images[::every]]))
    log(f"latent walk through seeds {' '.join(map(str, seeds))} ({method}, {len(frames)} frames): {path}, {strip}")
    return path, strip
