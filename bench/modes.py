"""Mode-coverage benchmark: does a GAN find every mode of a 2-D mixture, or collapse onto a few?

The classic toy problems of the Unrolled GAN, VEEGAN and PacGAN papers:

  ring  8 Gaussians evenly spaced on a circle of radius 2, standard deviation 0.02
  grid  25 Gaussians at (-4 + 2i, -4 + 2j), i, j = 0..4, standard deviation 0.05 (--grid-std to change)

A small MLP GAN is trained on each with the project's own GAN class (common.gan.GAN) and stabilisation
options (common.stabilize, the same flags the chapters take), once per configuration and seed. Then 2,500
samples are drawn and scored as in PacGAN (Lin et al. 2018):

  high quality (HQ)  a sample within 3 standard deviations of its nearest mode's centre
  mode captured      a mode with at least 20 of the 2,500 samples high-quality and nearest to it
  reverse KL         KL(generated || real) of the histogram of HQ samples over modes (the real one is uniform)

  python -m bench.modes                    # the full benchmark (make bench-modes)
  python -m bench.modes --quick            # one seed, fewer steps: a smoke test
  python -m bench.modes --configs gan pack2 "hinge-pack4=--loss hinge --pack 4" --steps 3000 --seeds 2

Prints a table (means over the seeds, ± their standard deviation), writes bench/modes_results.json and one
scatter plot per configuration (real centres and generated samples, first seed) under --plots-dir.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also as `python bench/modes.py`

from common import stabilize  # noqa: E402
from common.errors import UserError  # noqa: E402

RING_RADIUS, RING_STD, GRID_STD = 2.0, 0.02, 0.05
NUM_SAMPLES, MIN_COUNT = 2500, 20  # PacGAN: a mode is lost with fewer than 20 of 2,500 HQ samples

# name -> the stabilisation flags (exactly as a chapter's command line takes them)
PRESETS = {
    "gan": "",  # the baseline: BCE, non-saturating G, nothing else
    "label-smoothing": "--label-smoothing 0.9",
    "feature-matching": "--feature-matching",
    "minibatch": "--minibatch-discrimination 8",
    "historical": "--historical-averaging 0.001",
    "hinge": "--loss hinge",
    "wgan-gp": "--loss wgan-gp",
    "pack2": "--pack 2",
    "pack4": "--pack 4",
}
DEFAULT_CONFIGS = ("gan", "hinge", "pack2")

# What the papers report for the same protocol (PacGAN, Lin et al. 2018, Table 1; mean modes captured).
# Their grid std is 0.05 like ours, their ring's differs; the networks and training lengths differ too.
PUBLISHED = {"gan": {"ring": 6.3, "grid": 17.3}, "pack2": {"ring": 7.9}, "pack4": {"grid": 24.8}}


# --- the data and the score (NumPy only: the tests use them without TensorFlow) -------------------
def centres(dataset: str) -> np.ndarray:
    if dataset == "ring":
        angles = 2 * np.pi * np.arange(8) / 8
        return np.stack([RING_RADIUS * np.cos(angles), RING_RADIUS * np.sin(angles)], 1).astype("float32")
    if dataset == "grid":
        axis = np.arange(-4.0, 4.1, 2.0)
        return np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2).astype("float32")
    raise UserError(f"unknown dataset {dataset!r}: choose ring or grid")


def sample_real(dataset: str, std: float, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = centres(dataset)
    return (means[rng.integers(len(means), size=count)] + std * rng.standard_normal((count, 2))).astype("float32")


def mode_metrics(samples: np.ndarray, means: np.ndarray, std: float, min_count: int = MIN_COUNT) -> dict:
    """Modes captured, fraction of high-quality samples and reverse KL of the mode histogram."""
    samples = np.asarray(samples, dtype="float64").reshape(-1, 2)
    finite = np.isfinite(samples).all(1)
    distances = np.linalg.norm(samples[:, None, :] - means[None, :, :], axis=-1)
    nearest = distances.argmin(1)
    high_quality = finite & (distances.min(1) <= 3 * std)
    counts = np.bincount(nearest[high_quality], minlength=len(means))
    if counts.sum():
        q = counts / counts.sum()
        reverse_kl = float(np.sum(q[q > 0] * np.log(q[q > 0] * len(means))))
    else:  # no sample near any mode: as bad as all on one mode
        reverse_kl = math.log(len(means))
    return {"modes": int((counts >= min_count).sum()), "hq": float(high_quality.mean()),
            "reverse_kl": reverse_kl, "counts": counts.tolist()}


# --- the networks -------------------------------------------------------------------------------
def build_generator(latent_dim: int, hidden: int, depth: int):
    import keras
    from keras import layers

    z = keras.Input((latent_dim,), name="z")
    x = z
    for _ in range(depth):
        x = layers.Dense(hidden, activation="relu")(x)
    return keras.Model(z, layers.Dense(2, dtype="float32", name="point")(x), name="generator")


def build_discriminator(hidden: int, depth: int, pack: int = 1):
    """(x, y) points -> probability of being real; with `pack` K, K points side by side (PacGAN)."""
    import keras
    from keras import layers

    points = keras.Input((2 * pack,), name="points")
    x = points
    for _ in range(depth):
        x = layers.LeakyReLU(0.2)(layers.Dense(hidden)(x))
    return keras.Model(points, stabilize.discriminator_head(x), name="discriminator")


def parse_options(flags: str, batch_size: int) -> stabilize.Stabilizers:
    parser = argparse.ArgumentParser(prog="config", add_help=False, exit_on_error=False)
    stabilize.add_flags(parser)
    try:
        args = parser.parse_args(shlex.split(flags))
    except (argparse.ArgumentError, SystemExit) as error:
        raise UserError(f"bad configuration flags {flags!r}: {error}") from None
    options = stabilize.Stabilizers.from_args(args)
    stabilize.check(options, conditional=False, batch_size=batch_size)
    return options


def train(dataset: str, std: float, options: stabilize.Stabilizers, steps: int, batch_size: int, seed: int,
          hidden: int = 128, depth: int = 3, latent_dim: int = 2, learning_rate: float = 1e-3,
          xla: bool = False, chunk: int = 250, decay: float = 1.0, d_steps: int = 1):
    """Trains one GAN on the mixture; returns its generator. Step s's data and noise are fixed by (seed, s)."""
    import keras
    import tensorflow as tf

    from common.gan import GAN

    keras.utils.set_random_seed(seed)
    gan = GAN(build_generator(latent_dim, hidden, depth), build_discriminator(hidden, depth, options.pack),
              latent_dim, options)
    def adam(updates: int) -> keras.optimizers.Optimizer:  # cosine decay to `decay` x the rate at the end
        rate = learning_rate if decay == 1.0 else keras.optimizers.schedules.CosineDecay(learning_rate, updates, decay)
        return keras.optimizers.Adam(rate, beta_1=0.5, beta_2=0.9 if options.loss == "wgan-gp" else 0.999)

    gan.compile(d_optimizer=adam(steps * d_steps), g_optimizer=adam(steps))
    gan.build_optimizers()
    scale = data_scale(dataset)  # the networks see coordinates in [-1, 1]
    means = tf.constant(centres(dataset) / scale)

    def batch_at(step: tf.Tensor) -> dict:
        key = tf.stack([tf.constant(seed, tf.int64), step])
        which = tf.random.stateless_uniform([batch_size], key, maxval=len(centres(dataset)), dtype=tf.int32)
        jitter = tf.random.stateless_normal([batch_size, 2], key + tf.constant([0, 1 << 40], tf.int64))
        real = tf.gather(means, which) + (std / scale) * jitter
        return {"real": real, **gan.noise(batch_size, key + tf.constant([0, 1 << 42], tf.int64))}

    @tf.function(jit_compile=xla)
    def train_steps(start: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
        for i in tf.range(count):
            step = start + tf.cast(i, tf.int64)
            for extra in range(1, d_steps):  # more critic updates per G update (WGAN's n_critic), fresh batches
                gan.discriminator_step(batch_at(step + tf.constant(extra << 32, tf.int64)))
            gan.train_step(batch_at(step))
        return gan.trackers["d_loss"].result()

    done = 0
    while done < steps:
        count = min(chunk, steps - done)
        loss = float(train_steps(tf.constant(done, tf.int64), tf.constant(count, tf.int32)))
        if not math.isfinite(loss):
            break  # a diverged run is scored as it is (its samples are NaN: 0 modes, 0% HQ)
        done += count
    return gan.generator


def data_scale(dataset: str) -> float:
    return float(np.abs(centres(dataset)).max())


def generate(generator, latent_dim: int, seed: int, dataset: str, count: int = NUM_SAMPLES) -> np.ndarray:
    """`count` points from a generator `train` made, in the mixture's own coordinates."""
    z = np.random.default_rng(seed + 10_000).standard_normal((count, latent_dim)).astype("float32")
    return np.asarray(generator(z, training=False)) * data_scale(dataset)


def scatter(path: Path, panels: list[tuple[str, np.ndarray, np.ndarray, dict]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.6), squeeze=False)
    for axis, (dataset, samples, means, score) in zip(axes[0], panels):
        axis.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.35, color="tab:blue", label="generated")
        axis.scatter(means[:, 0], means[:, 1], s=40, marker="x", color="tab:red", label="mode centres")
        limit = 5.0 if dataset == "grid" else 2.8
        axis.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal",
                 title=f"{dataset}: {score['modes']}/{len(means)} modes, {100 * score['hq']:.1f}% HQ")
    axes[0][0].legend(loc="upper left", fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


# --- the command line ---------------------------------------------------------------------------
def resolve_configs(names: Sequence[str]) -> dict[str, str]:
    configs = {}
    for item in names:
        name, has_flags, flags = item.partition("=")
        if not has_flags and name not in PRESETS:
            raise UserError(f"unknown configuration {name!r}: choose from {', '.join(PRESETS)} "
                            f"or write NAME='--flags ...'")
        configs[name] = flags if has_flags else PRESETS[name]
    return configs


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def _cell(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean, std = _mean_std([v * scale for v in values])
    return f"{mean:.{digits}f}" + (f" ±{std:.{digits}f}" if len(values) > 1 else "")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed and 1,500 steps: a smoke test")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), metavar="CONFIG",
                        help=f"presets ({', '.join(PRESETS)}) or NAME='--stabilisation flags'; "
                             f"default: {' '.join(DEFAULT_CONFIGS)}")
    parser.add_argument("--datasets", nargs="+", choices=("ring", "grid"), default=["ring", "grid"])
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 6000; --quick 1500)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per configuration (default 2; --quick 1)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128, help="units per hidden layer of G and D")
    parser.add_argument("--depth", type=int, default=3, help="hidden layers of G and D")
    parser.add_argument("--latent-dim", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's rate at the start (beta_1 0.5)")
    parser.add_argument("--decay", type=float, default=0.05,
                        help="cosine decay of the rate to this fraction of it by the last step; 1 = constant")
    parser.add_argument("--critic-steps", type=int, default=1, help="D updates per G update (WGAN's n_critic)")
    parser.add_argument("--grid-std", type=float, default=GRID_STD, help="std of each grid Gaussian (VEEGAN: 0.02)")
    parser.add_argument("--xla", action="store_true",
                        help="XLA-compile the steps (on a CPU its ~20 s compile per run costs more than it saves)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("modes_results.json"))
    parser.add_argument("--plots-dir", type=Path, default=Path("runs/bench_modes"),
                        help="one scatter plot per configuration is written here")
    args = parser.parse_args(argv)
    steps = args.steps or (1500 if args.quick else 6000)
    seeds = args.seeds or (1 if args.quick else 2)
    if steps < 1 or seeds < 1:
        raise UserError("--steps and --seeds must be at least 1")
    configs = resolve_configs(args.configs)
    options = {name: parse_options(flags, args.batch_size) for name, flags in configs.items()}
    stds = {"ring": RING_STD, "grid": args.grid_std}

    import tensorflow as tf  # noqa: F401  (after the flags: --help and flag errors answer at once)

    print(f"{len(configs)} configurations x {len(args.datasets)} datasets x {seeds} seeds, {steps} steps of "
          f"batch {args.batch_size}", flush=True)
    results, started = {}, time.perf_counter()
    for name, option in options.items():
        results[name] = {"flags": configs[name], "datasets": {}}
        panels = []
        clock, cpu_clock = time.perf_counter(), time.process_time()
        for dataset in args.datasets:
            means, runs = centres(dataset), []
            for seed in range(args.seed, args.seed + seeds):
                generator = train(dataset, stds[dataset], option, steps, args.batch_size, seed, args.hidden,
                                  args.depth, args.latent_dim, args.learning_rate, args.xla,
                                  decay=args.decay, d_steps=args.critic_steps)
                samples = generate(generator, args.latent_dim, seed, dataset)
                runs.append({"seed": seed, **mode_metrics(samples, means, stds[dataset])})
                if seed == args.seed:
                    panels.append((dataset, samples, means, runs[-1]))
            results[name]["datasets"][dataset] = {
                "std": stds[dataset], "num_modes": len(means), "runs": runs,
                **{key: _mean_std([r[key] for r in runs])[0] for key in ("modes", "hq", "reverse_kl")}}
        results[name]["seconds"] = time.perf_counter() - clock
        results[name]["cpu_seconds"] = time.process_time() - cpu_clock  # all threads: the unloaded 1-core time
        scatter(args.plots_dir / f"{name}.png", panels, f"{name}: {configs[name] or 'plain GAN (BCE)'}")
        scores = ", ".join(f"{d} {r['modes']:.1f} modes {100 * r['hq']:.1f}% HQ"
                           for d, r in results[name]["datasets"].items())
        print(f"  {name}: {scores}; {results[name]['seconds']:.0f} s ({results[name]['cpu_seconds']:.0f} s of CPU)",
              flush=True)
    total, total_cpu = time.perf_counter() - started, time.process_time()

    header = ["config", "flags"]
    for dataset in args.datasets:
        k = len(centres(dataset))
        header += [f"{dataset} modes /{k}", f"{dataset} HQ %", f"{dataset} rKL", f"{dataset} paper"]
    rows = []
    for name, result in results.items():
        row = [name, result["flags"] or "(none)"]
        for dataset in args.datasets:
            runs = result["datasets"][dataset]["runs"]
            paper = PUBLISHED.get(name, {}).get(dataset)
            row += [_cell([r["modes"] for r in runs]), _cell([r["hq"] for r in runs], 100),
                    _cell([r["reverse_kl"] for r in runs], digits=2), "-" if paper is None else f"{paper}"]
        rows.append(row + [f"{result['seconds']:.0f}"])
    header.append("seconds")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, ["-" * w for w in widths], *rows]:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    print(f"\n{seeds} seed(s), {steps} steps each, {NUM_SAMPLES} samples scored; HQ = within 3 std of a mode; "
          f"a mode counts with >= {MIN_COUNT} HQ samples. 'paper': PacGAN Table 1 (mean modes; their nets differ). "
          f"Total {total:.0f} s ({total_cpu:.0f} s of CPU in this process).")
    summary = {"protocol": {"ring": {"radius": RING_RADIUS, "std": RING_STD, "modes": 8},
                            "grid": {"spacing": 2.0, "std": args.grid_std, "modes": 25},
                            "samples": NUM_SAMPLES, "min_count": MIN_COUNT, "hq_radius_in_std": 3},
               "training": {"steps": steps, "seeds": seeds, "first_seed": args.seed, "batch_size": args.batch_size,
                            "hidden": args.hidden, "depth": args.depth, "latent_dim": args.latent_dim,
                            "learning_rate": args.learning_rate, "decay": args.decay,
                            "critic_steps": args.critic_steps, "xla": args.xla},
               "published": PUBLISHED, "results": results, "total_seconds": total,
               "process_cpu_seconds": total_cpu}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out} and {len(results)} scatter plots in {args.plots_dir}")
    return 0


if __name__ == "__main__":
    from common.cli import run_main

    run_main(main)
