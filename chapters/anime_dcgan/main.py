"""Chapter 4: a DCGAN that draws faces (the book's anime faces, or any folder of images).

With no --data it trains on deterministic procedural cartoon faces generated on the fly (hair style and
colour, skin, eyes, mouth, glasses, beard, age, background); --data takes any folder of images, searched
recursively, centre-cropped to a square and resized to --image-size. --arch book is the book's network pair
(SGD, noisy labels); --arch dcgan the DCGAN paper's all-convolutional pair (Adam, one-sided smoothing).

  python chapters/anime_dcgan/main.py --arch dcgan --filters 32        # train (make train-anime-dcgan; CPU-sized)
  python chapters/anime_dcgan/main.py                                  # the book's pair (slow on a CPU)
  python chapters/anime_dcgan/main.py --data faces/ --image-size 64 --epochs 50
  python chapters/anime_dcgan/main.py --stage sample --num 100 --out faces.png
  python chapters/anime_dcgan/main.py --stage evaluate                 # FID/KID against the training images
  python chapters/anime_dcgan/main.py --stage explore                  # interpolations, arithmetic, sweeps
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from a plain checkout too

from common import latent, stabilize  # noqa: E402
from common.cli import (OUTPUT_FLAGS, SAMPLE_FLAGS, SCORING_FLAGS, add_scoring_flags, base_parser,  # noqa: E402
                        check_stage_flags, positive_int, run_main, unit_interval)

# --precision auto trains in bfloat16 on a CPU that has it: the default run steps in 42 ms instead of 70 with FID held.
BF16_ON_CPU = True
# what each later stage reads, and what only they read; common.cli.check_stage_flags refuses the rest
STAGE_FLAGS = {"sample": SAMPLE_FLAGS, "explore": ("seed", *latent.EXPLORE_FLAGS),
               "evaluate": ("seed", "data", "faces", *SCORING_FLAGS)}
LATER_ONLY = (*OUTPUT_FLAGS, *latent.EXPLORE_FLAGS, *SCORING_FLAGS)

# Per-architecture defaults of the shared stabilisation flags: the book's noisy labels (real in [0.8, 1],
# fake in [0, 0.2]) and the DCGAN-era one-sided label smoothing.
ARCH_DEFAULTS = {"book": {"label_smoothing": 1.0, "label_noise": 0.2},
                 "dcgan": {"label_smoothing": 0.9, "label_noise": 0.0}}


def build_parser():
    parser = base_parser("anime_dcgan", __doc__, stages=("train", "sample", "evaluate", "explore"), epochs=12,
                         batch_size=32, data_help="a folder of images (any size and format, searched recursively); "
                                                  "absent: procedural cartoon faces generated on the fly")
    net = parser.add_argument_group("networks")
    net.add_argument("--arch", choices=("book", "dcgan"), default="book",
                     help="book: the book's UpSampling/MaxPooling pair with SGD; dcgan: the DCGAN paper's "
                          "strided all-convolutional pair with Adam")
    net.add_argument("--image-size", type=positive_int, default=32, metavar="PX",
                     help="side of the square images: 32, 64 (the book's) or 128; --arch dcgan also 28 (the small "
                          "celebrity-face DCGAN, 7x7 -> 14 -> 28; pair it with --d-dropout 0.3)")
    net.add_argument("--latent-dim", type=positive_int, default=100, help="size of the generator's input noise z")
    net.add_argument("--filters", type=positive_int, default=64, metavar="F",
                     help="--arch dcgan only: width of the widest-resolution layer (ngf = ndf); 64 as in the paper's "
                          "common implementation, 32 trains about 3x faster")
    net.add_argument("--d-dropout", type=unit_interval, default=0.0, metavar="RATE",
                     help="--arch dcgan: Dropout after each of the discriminator's LeakyReLUs (0 = none)")
    net.add_argument("--faces", type=positive_int, default=8000, metavar="N",
                     help="without --data: how many procedural faces make up the training set")
    add_scoring_flags(parser)
    # two defaults depend on --arch: None here, settled by arch_defaults() once --arch is known
    stabilize.add_flags(parser, label_smoothing=None, label_noise=None, chapter_defaults={
        dest: f"default: {ARCH_DEFAULTS['book'][dest]:g} with --arch book, {ARCH_DEFAULTS['dcgan'][dest]:g} with "
              "--arch dcgan" for dest in ("label_smoothing", "label_noise")})
    latent.add_flags(parser)
    return parser


def arch_defaults(args) -> None:
    for key, value in ARCH_DEFAULTS[args.arch].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    arch_defaults(args)
    from chapters.anime_dcgan import models
    from chapters.anime_dcgan.data import extractor, real_images, training_data

    check_stage_flags(parser, argv, STAGE_FLAGS, LATER_ONLY)
    if args.stage == "train" and args.resume is None:  # refuse before TensorFlow starts or a run folder is made
        models.check_image_size(args.arch, args.image_size)
        stabilize.check(stabilize.Stabilizers.from_args(args), conditional=False, batch_size=args.batch_size)

    from common.checkpoints import load_model
    from common.run import open_run, open_training_run, use_saved_flags
    from common.train import sample_stage

    if args.stage == "sample":
        sample_stage(open_run(args, parser, argv, training=False), args.chapter, args.num, args.seed, args.out,
                     args.overwrite)
        return 0
    if args.stage in ("explore", "evaluate"):
        run = open_run(args, parser, argv, training=False)
        generator = load_model(run.model_path("generator"), f"train first: {parser.prog} --run-dir {run}")
        if args.stage == "explore":
            latent.explore_stage(run, generator, latent.Exploration.from_args(args))
            return 0
        from common.evaluate import GeneratorScore, evaluate_stage

        size = int(generator.outputs[0].shape[1])
        use_saved_flags(run, args, parser, argv, ("data", "faces"))  # the faces it trained on
        real = real_images(args.data, size, args.eval_samples, args.seed, args.faces)
        evaluate_stage(run, generator, GeneratorScore(real, extractor(args), args.eval_samples, args.seed))
        return 0

    run, (count, take) = open_training_run(args, parser, argv, lambda: training_data(args))
    models.check_image_size(args.arch, args.image_size)
    options = stabilize.Stabilizers.from_args(args)
    stabilize.check(options, conditional=False, batch_size=args.batch_size)

    from common.devices import precision_of, setup_devices
    from common.gan import GAN
    from common.train import Schedule, fit_gan

    strategy = setup_devices(args.strategy, precision_of(args), args.seed, bf16_on_cpu=BF16_ON_CPU)
    with strategy.scope():
        generator = models.build_generator(args.arch, args.image_size, args.latent_dim, args.filters)
        discriminator = models.build_discriminator(args.arch, args.image_size, args.filters, pack=options.pack,
                                                   dropout=args.d_dropout)
        gan = GAN(generator, discriminator, args.latent_dim, options)
        d_optimizer, g_optimizer = models.optimizers(args.arch)
        gan.compile(d_optimizer=d_optimizer, g_optimizer=g_optimizer, jit_compile=args.xla)
    print(f"--arch {args.arch} at {args.image_size}x{args.image_size}: generator {generator.count_params():,} "
          f"weights, discriminator {discriminator.count_params():,}; labels: "
          + (f"real in [{args.label_smoothing - args.label_noise:g}, {args.label_smoothing:g}], "
             f"fake in [0, {args.label_noise:g}]" if args.label_noise else f"real {args.label_smoothing:g}, fake 0"))
    fit_gan(gan, run, Schedule.from_args(args), strategy, count, take)
    return 0


if __name__ == "__main__":
    run_main(main)
