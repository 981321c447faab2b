"""Chapter 2: 3D-GAN, a GAN that makes voxel shapes (chairs, tables, airplanes).

Trains the book's 3-D convolutional generator and discriminator (Wu et al. 2016). With no --data it uses
procedural voxel furniture and aircraft generated in datasets/procedural_voxels.py; --data takes the
3DShapeNets volumetric_data folder (datasets/fetch_shapenet.py downloads it).

  python chapters/gan_3d/main.py                                   # 32³ chairs, CPU-sized (about 12 min)
  python chapters/gan_3d/main.py --category airplane --cube-len 64 --width 1 --batch-size 32   # the book's, GPU
  python chapters/gan_3d/main.py --data 3DShapeNets/volumetric_data --category chair
  python chapters/gan_3d/main.py --stage sample --num 16 --format obj --out shapes/
  python chapters/gan_3d/main.py --stage interpolate --num 8
  python chapters/gan_3d/main.py --stage evaluate --num 256
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from a plain checkout too

from common import stabilize  # noqa: E402
from common.cli import base_parser, positive_float, positive_int, run_main, unit_interval  # noqa: E402
from common.errors import UserError  # noqa: E402

# --precision auto keeps float32 on a CPU until bfloat16's Conv3D speed and results are measured (README).
BF16_ON_CPU = False

# the book's optimiser settings (--book-rates); the defaults below are the ones that learn on a CPU in minutes
BOOK_RATES = {"g_lr": 0.0025, "d_lr": 1e-5, "g_beta1": 0.5, "d_beta1": 0.9}
# flags that shape the networks or the data: the later stages take them from the run's config.json
_FROM_RUN = ("cube_len", "width", "category", "split", "data", "num_shapes", "z_std")


def build_parser():
    parser = base_parser("gan_3d", __doc__, stages=("train", "sample", "evaluate", "interpolate"), epochs=16,
                         batch_size=16, data_help="the 3DShapeNets volumetric_data folder "
                                                  "(<category>/30/<split>/*.mat); absent: procedural shapes")
    shapes = parser.add_argument_group("shapes")
    shapes.add_argument("--category", default="chair",
                        help="which category to learn: chair, table or airplane for the embedded shapes; any "
                             "3DShapeNets folder name (e.g. chair, airplane, bed, sofa) with --data")
    shapes.add_argument("--split", choices=("train", "test"), default="train",
                        help="which 3DShapeNets split to read (the procedural 'test' split is a second set)")
    shapes.add_argument("--cube-len", type=int, choices=(32, 64), default=32,
                        help="voxel grid side: 64 is the book's network, 32 drops one block on each side (CPU)")
    shapes.add_argument("--num-shapes", type=positive_int, default=512, metavar="N",
                        help="how many procedural shapes to train on (without --data)")
    nets = parser.add_argument_group("networks and optimisers")
    nets.add_argument("--width", type=positive_float, default=0.25,
                      help="fraction of the book's filter counts in every hidden layer (1 = the book's 512..64)")
    nets.add_argument("--g-lr", type=positive_float, default=1e-3, help="generator Adam learning rate (book: 0.0025)")
    nets.add_argument("--d-lr", type=positive_float, default=1e-4, help="discriminator Adam learning rate (book: 1e-5)")
    nets.add_argument("--g-beta1", type=unit_interval, default=0.5, help="generator Adam beta_1 (book: 0.5)")
    nets.add_argument("--d-beta1", type=unit_interval, default=0.5, help="discriminator Adam beta_1 (book: 0.9)")
    nets.add_argument("--book-rates", action="store_true",
                      help="use the book's optimiser settings (G 0.0025/0.5, D 1e-5/0.9), overriding the four "
                           "flags above; the book's code is widely reported to end in 'always a cube' with them (see the README)")
    nets.add_argument("--z-std", type=positive_float, default=0.33, help="standard deviation of the latent z (book: 0.33)")
    nets.add_argument("--d-acc-threshold", type=float, default=1.0, metavar="A",
                      help="update D only on steps where its batch accuracy is at most A (Wu et al.: 0.8); "
                           "the default 1 always updates D: with the throttle the CPU default collapses "
                           "to one shape (see the README)")
    out = parser.add_argument_group("pictures and exports")
    out.add_argument("--grid", type=positive_int, default=16, metavar="N", help="shapes in each epoch's render grid")
    out.add_argument("--format", choices=("png", "npy", "obj"), default="png",
                     help="--stage sample output: a PNG grid of renders, one .npy of 0/1 volumes, or a folder "
                          "of .obj meshes (all thresholded at 0.5)")
    out.add_argument("--strips", type=positive_int, default=3, metavar="N",
                     help="--stage interpolate: how many interpolation rows (each --num shapes long)")
    stabilize.add_flags(parser)
    return parser


def fixed_latents(count: int, z_std: float, seed: int, latent_dim: int = 200):
    import numpy as np

    z = np.random.default_rng(seed).standard_normal((count, 1, 1, 1, latent_dim)).astype(np.float32)
    return z * np.float32(z_std)


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.book_rates:
        for key, value in BOOK_RATES.items():
            setattr(args, key, value)
    if not 0.0 < args.d_acc_threshold <= 1.0:
        raise UserError(f"--d-acc-threshold must be in (0, 1], got {args.d_acc_threshold}")
    if args.width <= 0:
        raise UserError(f"--width must be positive, got {args.width}")
    if args.stage == "train":
        stabilize.check(stabilize.Stabilizers.from_args(args), conditional=False, batch_size=args.batch_size)

    from chapters.gan_3d.data import load_volumes
    from common.run import open_run, use_saved_flags

    if args.stage != "train":
        run = open_run(args, parser, argv, training=False)
        use_saved_flags(run, args, parser, argv, _FROM_RUN)
        return {"sample": sample_stage, "evaluate": evaluate_stage, "interpolate": interpolate_stage}[args.stage](
            run, args)

    volumes = load_volumes(args.data, args.category, args.split, args.cube_len, args.num_shapes)
    train(volumes, open_run(args, parser, argv, training=True), args)
    return 0


def train(volumes, run, args) -> None:
    import tensorflow as tf

    from chapters.gan_3d import models
    from common.devices import precision_of, setup_devices
    from common.train import fit_gan
    from common.voxels import render_grid

    print(f"{len(volumes)} {args.category} shapes of {args.cube_len}³ voxels "
          f"({'3DShapeNets ' + args.data if args.data else 'procedural'}), {volumes.mean():.1%} filled")
    options = stabilize.Stabilizers.from_args(args)
    if options.active():
        print("stabilisation: " + ", ".join(options.active()))
    strategy = setup_devices(args.strategy, precision_of(args), args.seed, bf16_on_cpu=BF16_ON_CPU)
    with strategy.scope():
        gan = models.VoxelGAN(models.build_generator(args.cube_len, width=args.width, occupancy=float(volumes.mean())),
                              models.build_discriminator(args.cube_len, width=args.width, pack=options.pack),
                              z_std=args.z_std, d_acc_threshold=args.d_acc_threshold, options=options)
        d_optimizer, g_optimizer = models.optimizers(args.g_lr, args.d_lr, args.g_beta1, args.d_beta1)
        gan.compile(d_optimizer=d_optimizer, g_optimizer=g_optimizer, jit_compile=args.xla)
    latents = fixed_latents(args.grid, args.z_std, args.seed)

    def to_volumes(row: dict) -> dict:
        return {"real": tf.cast(row["real"], tf.float32)[..., None]}

    fit_gan(gan, run, args, strategy, len(volumes), _take(volumes, to_volumes),
            sample=lambda: gan.sample(latents), render=lambda shapes: render_grid(shapes))


def _take(volumes, transform):
    from common.data import in_memory

    return in_memory({"real": volumes}, transform)


def _generator(run, args):
    from common.checkpoints import load_model

    return load_model(run.model_path("generator"), f"train first: python chapters/gan_3d/main.py --run-dir {run}")


def _generate(generator, z):
    import numpy as np

    return np.asarray(generator.predict(z, batch_size=32, verbose=0))[..., 0]


def sample_stage(run, args) -> int:
    import numpy as np

    from common.images import save_png
    from common.run import output_file
    from common.voxels import render_grid, write_obj

    if args.out and args.format == "obj":  # one file per shape into a folder: the folder must be new or empty
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--format obj writes one file per shape into a folder, and {out} is a file")
        if out.is_dir() and any(out.iterdir()) and not args.overwrite:
            raise UserError(f"--out {out} already holds files; pass --overwrite to write over its shape_*.obj "
                            "files, or choose another folder")
    elif args.out:
        output_file(args.out, args.overwrite)
    generator = _generator(run, args)
    shapes = _generate(generator, fixed_latents(args.num, args.z_std, args.seed, generator.inputs[0].shape[-1]))
    if args.format == "png":
        out = Path(args.out or run.samples / f"sample_seed{args.seed}.png")
        save_png(out, render_grid(shapes))
    elif args.format == "npy":
        out = Path(args.out or run.samples / f"sample_seed{args.seed}.npy")
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(out, (shapes > 0.5).astype(np.uint8))
    else:
        out = Path(args.out or run.samples / f"obj_seed{args.seed}")
        faces = [write_obj(out / f"shape_{i:03d}.obj", shape)[1] for i, shape in enumerate(shapes)]
        print(f"meshes of {min(faces)} to {max(faces)} faces (exposed voxel faces only)")
    print(f"wrote {args.num} generated {args.category} shapes (seed {args.seed}, threshold 0.5) to {out}")
    return 0


def atomic_save_npy(path: Path, array) -> None:
    """np.save via a temporary name: an interrupted write never leaves half an array under `path`."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def interpolate_stage(run, args) -> int:
    import numpy as np

    from common.images import save_png
    from common.run import output_file
    from common.voxels import interpolate_latents, render_grid

    if args.out:
        output_file(args.out, args.overwrite)
    generator = _generator(run, args)
    steps = max(2, args.num)
    ends = fixed_latents(2 * args.strips, args.z_std, args.seed, generator.inputs[0].shape[-1])
    z = np.concatenate([interpolate_latents(ends[2 * r], ends[2 * r + 1], steps) for r in range(args.strips)])
    out = Path(args.out or run.samples / f"interpolation_seed{args.seed}.png")
    save_png(out, render_grid(_generate(generator, z), columns=steps))
    print(f"wrote {args.strips} interpolation strips of {steps} shapes (seed {args.seed}) to {out}")
    return 0


def evaluate_stage(run, args) -> int:
    import time

    from chapters.gan_3d.data import load_volumes
    from common.tensorboard import TensorBoardWriter
    from common.voxels import shape_metrics

    started = time.time()
    generator = _generator(run, args)
    training = load_volumes(args.data, args.category, args.split, args.cube_len, args.num_shapes)
    latent_dim = generator.inputs[0].shape[-1]
    shapes = _generate(generator, fixed_latents(args.num, args.z_std, args.seed + 1, latent_dim))
    scores = shape_metrics(shapes, training)
    epoch = run.epochs_trained()
    run.write_json(run.metrics_file, {"epoch": epoch, "samples": args.num, "training_shapes": len(training),
                                      "seed": args.seed + 1, "metrics": scores})
    TensorBoardWriter(run).scalars(scores, step=epoch, prefix="eval/")
    print(f"evaluated {run} (epoch {epoch}, {args.num} generated vs {len(training)} training shapes, "
          f"{time.time() - started:.1f} s):")
    for key, value in scores.items():
        print(f"  {key:28s} {value:.4f}")
    print(f"written to {run.metrics_file}")
    return 0


if __name__ == "__main__":
    run_main(main)
