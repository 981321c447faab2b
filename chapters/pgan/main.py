"""Chapter 7: a Progressive GAN (Karras et al. 2018) that grows from 4x4 to --max-resolution.

Training starts both networks at 4x4 and doubles the resolution phase by phase: each new block fades in while
alpha rises linearly from 0 to 1 over --fade-images images, then trains at full alpha for --stable-images images.
The paper's recipe throughout: equalised learning rate, pixel norm in G, minibatch stddev in D, Adam (beta_1 0,
beta_2 0.99) restarted at every phase, per-resolution batch sizes, and the smoothed generator Gs (a moving average
of G's weights) for every image drawn; its WGAN-GP loss with the 0.001 drift term is --loss wgan-gp. The default
run is a CPU's share of it: the non-saturating logistic loss with R1 that StyleGAN trained this growth with (two
batches through D in the D update instead of three), many cheap images at 4x4..16x16 and 64,000 at 32x32
(--fade-images / --stable-images per resolution), lr 0.01 instead of the paper's 0.001 for its few hundred steps a
phase, 32 feature maps at 32x32 (--fmap-base 1024).
With no --data it trains on procedural cartoon faces rendered at --max-resolution; --data takes any folder of
images (CelebA, CelebA-HQ, ...), downsampled per resolution in tf.data.

  python chapters/pgan/main.py                          # 4 -> 8 -> 16 -> 32 on 2 CPU cores: 10 min, 15 in float32
  python chapters/pgan/main.py --max-resolution 64 --max-filters 512 --fmap-base 16384 --learning-rate 0.001 \
      --batch-size 16 --batch-sizes '' --g-average-half-life 11000 --fade-images 800000 --stable-images 800000
  python chapters/pgan/main.py --resume                 # continues mid-phase, even in the middle of a fade-in
  python chapters/pgan/main.py --resume --max-resolution 64   # grow a finished run one level further
  python chapters/pgan/main.py --stage sample --num 64 --out faces.png
  python chapters/pgan/main.py --stage explore          # latent walk (GIF + strip), interpolations, sweeps
  python chapters/pgan/main.py --stage evaluate         # FID/KID at the final resolution against the data
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from a plain checkout too

from chapters.pgan.schedule import (  # noqa: E402  (light: a fast --help)
    DEFAULT_BATCHES, DEFAULT_FADE, DEFAULT_FMAP_BASE, DEFAULT_HALF_LIFE, DEFAULT_LEARNING_RATE, DEFAULT_STABLE,
    LOSS_FLAGS, LOSSES, check_args, check_memory, images_spec)
from common import latent  # noqa: E402
from common.cli import (  # noqa: E402
    OUTPUT_FLAGS, SAMPLE_FLAGS, SCORING_FLAGS, add_scoring_flags, base_parser, check_stage_flags, frozen_flags,
    int_at_least, non_negative_float, non_negative_int, positive_float, positive_int, run_main)
from common.errors import UserError  # noqa: E402

# what each later stage reads, and what only they read; common.cli.check_stage_flags refuses the rest
_WALK = ("walk_seeds", "walk_steps", "walk_method", *latent.EXPLORE_FLAGS)
STAGE_FLAGS = {"sample": SAMPLE_FLAGS, "explore": ("seed", *_WALK),
               "evaluate": ("seed", "data", "faces", "cache_mb", *SCORING_FLAGS)}
LATER_ONLY = (*OUTPUT_FLAGS, *_WALK, *SCORING_FLAGS)


def build_parser():
    parser = base_parser("pgan", __doc__, stages=("train", "sample", "explore", "evaluate"), batch_size=32,
                         epochs=None,  # its length is set by --max-resolution, --fade-images and --stable-images
                         data_help="a folder of images (any size and format, searched recursively); absent: "
                                   "procedural cartoon faces rendered at --max-resolution",
                         batch_help="minibatch from 4x4 up to 128x128 (the paper's 16; 32 keeps a CPU busier), then "
                                    "the paper's 14, 6, 3 at 256, 512, 1024 (never more than this); --batch-sizes "
                                    "overrides")
    grow = parser.add_argument_group("progressive growing")
    grow.add_argument("--max-resolution", type=positive_int, default=32, metavar="PX",
                      help="final resolution, a power of two from 8 to 1024 (64 and up need more than a CPU)")
    grow.add_argument("--fade-images", type=images_spec, default=DEFAULT_FADE, metavar="N|RES:N,...",
                      help="real images shown while a new block fades in (alpha 0 -> 1): one number for every "
                           "resolution, or per resolution, e.g. 8:20000,16:12000,32:12000 (a bare number among "
                           "them covers the rest); the paper: 800000")
    grow.add_argument("--stable-images", type=images_spec, default=DEFAULT_STABLE, metavar="N|RES:N,...",
                      help="real images shown at full alpha after each fade-in (and at 4x4), like --fade-images; "
                           "the paper: 800000")
    grow.add_argument("--batch-sizes", default=DEFAULT_BATCHES, metavar="RES:N,...",
                      help="per-resolution minibatch sizes, e.g. 4:64,8:64,16:32,32:16 (the rest from --batch-size; "
                           "'' for --batch-size everywhere)")
    grow.add_argument("--stop-after-images", type=positive_int, default=None, metavar="N",
                      help="stop at the first tick (checkpoint) at which the run has shown N real images in all "
                           "(e.g. to time-box a session); --resume goes on from there, mid-phase")
    grow.add_argument("--tick-images", type=positive_int, default=2000, metavar="N",
                      help="a tick: log to TensorBoard and write a checkpoint and a grid every N images (rounded "
                           "to whole steps; each phase is rounded up to whole ticks)")
    net = parser.add_argument_group("networks and loss")
    net.add_argument("--latent-dim", type=positive_int, default=512, help="size of the generator's input noise z")
    net.add_argument("--max-filters", type=positive_int, default=64, metavar="F",
                     help="cap on feature maps per layer (see --fmap-base); the paper's 512; 64 keeps the default "
                          "run within 15 minutes on a CPU")
    net.add_argument("--fmap-base", type=positive_int, default=DEFAULT_FMAP_BASE, metavar="B",
                     help="feature maps at resolution R: min(--max-filters, B / R), halving with every doubling "
                          "once B / R is below the cap; the paper's 16384 (512 up to 32x32)")
    net.add_argument("--learning-rate", type=positive_float, default=DEFAULT_LEARNING_RATE,
                     help="Adam's learning rate for both networks; the paper's 0.001 needs its 50,000 steps a phase")
    net.add_argument("--loss", choices=LOSSES, default=LOSSES[0],
                     help="logistic: the non-saturating GAN loss with an R1 penalty on the reals (Mescheder et al. "
                          "2018), as StyleGAN (Karras et al. 2019) trained progressive growing; its D update runs "
                          "D on two batches instead of three. wgan-gp: the paper's WGAN-GP with its drift term "
                          "(runs saved before this flag go on with it)")
    net.add_argument("--r1-gamma", type=non_negative_float, default=1.0,
                     help="only with --loss logistic: R1's weight gamma in gamma / 2 * E|grad_x D(x)|^2, the gradient "
                          "of D's score with respect to each real image; 0 turns it off (StyleGAN's 10 scored the same "
                          "here, 0.1 worse, one seed each: README)")
    net.add_argument("--gp-weight", type=non_negative_float, default=10.0,
                     help="only with --loss wgan-gp: gradient penalty weight lambda (the paper's 10)")
    net.add_argument("--drift", type=non_negative_float, default=0.001,
                     help="only with --loss wgan-gp: weight of the drift term E[D(x)^2] on real scores "
                          "(the paper's 0.001)")
    net.add_argument("--g-average-half-life", type=non_negative_int, default=DEFAULT_HALF_LIFE, metavar="IMAGES",
                     help="the paper's smoothed generator Gs: an exponential moving average of G's weights, "
                          "sampled and saved instead of G, whose weight halves every IMAGES images (the paper's "
                          "decay 0.999 at batch 16 is about 11000); 0: no average, G itself")
    net.add_argument("--faces", type=positive_int, default=6000, metavar="N",
                     help="without --data: how many procedural faces make up the training set")
    net.add_argument("--cache-mb", type=non_negative_int, default=2048, metavar="MB",
                     help="--data: keep a resolution's decoded images in memory when they fit in MB, else decode "
                          "them again every pass")
    walk = parser.add_argument_group("latent walk (--stage explore)")
    walk.add_argument("--walk-seeds", type=non_negative_int, nargs=2, default=None, metavar=("A", "B"),
                      help="the two latents the walk goes between and back, by seed (default: --seed, --seed+1)")
    walk.add_argument("--walk-steps", type=int_at_least(2), default=16, metavar="N",
                      help="points on the walk from A to B, both ends included (the GIF loops back to A)")
    walk.add_argument("--walk-method", choices=latent.METHODS, default="spherical", help="how the walk interpolates")
    add_scoring_flags(parser)
    latent.add_flags(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_stage_flags(parser, argv, STAGE_FLAGS, LATER_ONLY)
    check_args(args)
    from common.cli import explicit_flags

    typed = explicit_flags(parser, argv)
    if args.stage == "train" and args.resume is None:
        check_loss_flags(args.loss, typed)  # before a run folder is made

    import chapters.pgan.layers  # noqa: F401  registers the custom layers before any .keras file is loaded
    from chapters.pgan.evaluation import evaluate, explore
    from chapters.pgan.training import Trainer, TrainingData
    from common.run import open_run, use_saved_flags

    if args.stage == "sample":
        from common.train import sample_stage

        sample_stage(open_run(args, parser, argv, training=False), args.chapter, args.num, args.seed, args.out,
                     args.overwrite)
        return 0
    if args.stage == "explore":
        explore(open_run(args, parser, argv, training=False), args, parser)
        return 0
    if args.stage == "evaluate":
        run = open_run(args, parser, argv, training=False)
        use_saved_flags(run, args, parser, argv, ("data", "faces", "max_resolution"))  # the data it trained on
        evaluate(run, args, parser)
        return 0

    if args.resume is None:
        check_memory(args)  # before anything is built or rendered, and before a run folder is made
        data = TrainingData.from_args(args)  # checked before a run folder is made
        run = open_run(args, parser, argv, training=True)
    else:
        # runs saved before --fmap-base, --g-average-half-life and --loss existed trained with 16384, no average and
        # WGAN-GP
        run = open_run(args, parser, argv, training=True,
                       older_runs={"fmap_base": 16384, "g_average_half_life": 0, "loss": "wgan-gp"})
        if "stop_after_images" not in typed:
            args.stop_after_images = None  # a time box applies to the session that asked for it
        check_args(args)  # the run's saved flags, with the ones typed now on top
        check_memory(args)
        data = TrainingData.from_args(args)
    check_loss_flags(args.loss, typed)  # the loss of a run folder's saved config.json, or the one typed now
    Trainer(run, frozen_flags(args), data).train()  # settled: the growth reads them, never changes them
    return 0


def check_loss_flags(loss: str, typed: set[str]) -> None:
    """A flag of the other loss would be a silent no-op: say so instead of training without it."""
    for owner, flags in LOSS_FLAGS.items():
        stray = ["--" + flag.replace("_", "-") for flag in flags if flag in typed]
        if owner != loss and stray:
            raise UserError(f"{' and '.join(stray)} only {'acts' if len(stray) == 1 else 'act'} under --loss {owner}, "
                            f"but this run trains with --loss {loss}: drop {'it' if len(stray) == 1 else 'them'}, "
                            f"or pass --loss {owner}")


if __name__ == "__main__":
    run_main(main)
