"""Chapter 2: 3D-GAN, a GAN that makes voxel shapes (chairs, tables, airplanes).

Trains the book's 3-D convolutional generator and discriminator (Wu et al. 2016). With no --data it uses
procedural voxel furniture and aircraft generated in datasets/procedural_voxels.py; --data takes the
3DShapeNets volumetric_data folder (datasets/fetch_shapenet.py downloads it).

  python chapters/gan_3d/main.py                                   # 32³ chairs, CPU-sized (about 14 min)
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
from common.cli import (OUTPUT_FLAGS, SAMPLE_FLAGS, base_parser, check_stage_flags,  # noqa: E402
                        frozen_flags, non_negative_float, positive_float, positive_int, run_main, unit_interval)
from common.errors import UserError  # noqa: E402

# the book's optimiser settings (--book-rates); the defaults below are the ones that learn on a CPU in minutes
BOOK_RATES = {"g_lr": 0.0025, "d_lr": 1e-5, "g_beta1": 0.5, "d_beta1": 0.9}
# flags that shape the networks or the data: the later stages take them from the run's config.json
_FROM_RUN = ("cube_len", "width", "category", "split", "data", "num_shapes", "z_std")
# the measured CPU default (README): without it D wins outright on exact 0/1 voxels and G can collapse
INSTANCE_NOISE = 0.25
# the measured CPU default (README): samples and saved models come from an average of G's weights (~100 steps),
# fewer loose voxels than the raw G's
AVERAGE_GENERATOR = 0.99
# the measured CPU default (README), with the full-resolution G layer and 24 epochs: the first default under
# 3 % loose voxels on both seeds measured (0.019 and 0.027, against 0.042 and 0.038)
LABEL_SMOOTHING, HISTORICAL_AVERAGING = 0.9, 0.01
# the measured CPU default (README): G pays for occupancy not joined to the shape's body; 38 % of the samples
# come out in one piece instead of 14 %, with more of the legs
CONNECTIVITY = 25.0
# what each later stage reads, and what only they read; common.cli.check_stage_flags refuses the rest
STAGE_FLAGS = {"sample": (*SAMPLE_FLAGS, "format", "z_std"), "interpolate": (*SAMPLE_FLAGS, "strips", "z_std"),
               "evaluate": ("seed", "num", "z_std", "data", "category", "split", "num_shapes")}
LATER_ONLY = (*OUTPUT_FLAGS, "format", "strips")


def build_parser():
    parser = base_parser("gan_3d", __doc__, stages=("train", "sample", "evaluate", "interpolate"), epochs=24,
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
    nets.add_argument("--g-output", choices=("full-res", "book"), default=None,
                      help="G's last layer: full-res = its last transposed convolution makes 64 x width features "
                           "at the output's resolution and a 3³ convolution makes the occupancy (fewer broken "
                           "legs, see the README); book = one transposed convolution straight to the occupancy "
                           "(default: full-res at --cube-len 32, book at 64, the book's network)%(default).0s")
    nets.add_argument("--g-lr", type=positive_float, default=1e-3, help="generator Adam learning rate (book: 0.0025)")
    nets.add_argument("--d-lr", type=positive_float, default=2e-4, help="discriminator Adam learning rate (book: 1e-5)")
    nets.add_argument("--g-beta1", type=unit_interval, default=0.5, help="generator Adam beta_1 (book: 0.5)")
    nets.add_argument("--d-beta1", type=unit_interval, default=0.5, help="discriminator Adam beta_1 (book: 0.9)")
    nets.add_argument("--book-rates", action="store_true",
                      help="use the book's optimiser settings (G 0.0025/0.5, D 1e-5/0.9), overriding the four "
                           "flags above; the book's code is widely reported to end in 'always a cube' with them (see the README)")
    nets.add_argument("--z-std", type=positive_float, default=0.33, help="standard deviation of the latent z (book: 0.33)")
    nets.add_argument("--instance-noise", type=non_negative_float, default=INSTANCE_NOISE, metavar="S",
                      help="D judges every volume, real or generated, with N(0, S) noise added to each voxel, so it "
                           "cannot win on the real ones being exactly 0 or 1 (see the README); 0 = off (the book)")
    nets.add_argument("--connectivity", type=non_negative_float, default=CONNECTIVITY, metavar="W",
                      help="G's loss also carries W times the share of its occupancy that is not joined to the "
                           "shape's body (soft 26-connectivity, on 4 of each step's fakes): fewer loose voxels and "
                           "broken legs (see the README); 0 = off (the book)")
    nets.add_argument("--d-acc-threshold", type=float, default=1.0, metavar="A",
                      help="update D only on steps where its batch accuracy is at most A (Wu et al.: 0.8); "
                           "the default 1 always updates D: with the throttle the CPU default (before "
                           "--instance-noise) collapsed to one shape (see the README)")
    out = parser.add_argument_group("pictures and exports")
    out.add_argument("--grid", type=positive_int, default=16, metavar="N", help="shapes in each epoch's render grid")
    out.add_argument("--format", choices=("png", "npy", "obj"), default="png",
                     help="--stage sample output: a PNG grid of renders, one .npy of 0/1 volumes, or a folder "
                          "of .obj meshes (all thresholded at 0.5)")
    out.add_argument("--strips", type=positive_int, default=3, metavar="N",
                     help="--stage interpolate: how many interpolation rows (each --num shapes long)")
    stabilize.add_flags(parser, average_generator=AVERAGE_GENERATOR, label_smoothing=LABEL_SMOOTHING,
                        historical_averaging=HISTORICAL_AVERAGING)
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_stage_flags(parser, argv, STAGE_FLAGS, LATER_ONLY)
    stabilize.drop_untyped_smoothing(args, parser, argv)
    if args.book_rates:
        for key, value in BOOK_RATES.items():
            setattr(args, key, value)
    if not 0.0 < args.d_acc_threshold <= 1.0:
        raise UserError(f"--d-acc-threshold must be in (0, 1], got {args.d_acc_threshold}")
    if args.width <= 0:
        raise UserError(f"--width must be positive, got {args.width}")
    if args.stage == "train":
        stabilize.check(stabilize.Stabilizers.from_args(args), conditional=False, batch_size=args.batch_size)

    from chapters.gan_3d import stages
    from chapters.gan_3d.data import load_volumes
    from common.run import open_run, open_training_run, use_saved_flags

    if args.stage != "train":
        run = open_run(args, parser, argv, training=False)
        use_saved_flags(run, args, parser, argv, _FROM_RUN)
        return getattr(stages, args.stage)(run, args)  # sample, evaluate or interpolate

    if args.g_output is None and args.resume is None:  # a resumed run keeps its own (its config.json's)
        args.g_output = "full-res" if args.cube_len == 32 else "book"
    run, volumes = open_training_run(
        args, parser, argv, lambda: load_volumes(args.data, args.category, args.split, args.cube_len, args.num_shapes),
        # a run saved before these flags existed trained without them
        older_runs={"instance_noise": 0.0, "average_generator": 0.0, "g_output": "book", "connectivity": 0.0})
    stages.train(volumes, run, frozen_flags(args))  # settled: training reads them, never changes them
    return 0


if __name__ == "__main__":
    run_main(main)
