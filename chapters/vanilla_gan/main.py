"""Chapter 1: a vanilla GAN that learns to draw handwritten digits.

Trains the book's dense generator and discriminator on MNIST. With no --data it uses the 8,000 real MNIST
digits embedded in datasets/; --data takes Keras' mnist.npz, a folder with the four MNIST IDX files (raw or
.gz), or a folder of digit images.

  python chapters/vanilla_gan/main.py                      # train (about 5 minutes on a 2-core CPU)
  python chapters/vanilla_gan/main.py --stage sample --num 100 --out digits.png
  python chapters/vanilla_gan/main.py --resume --epochs 100 # continue the latest run
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from a plain checkout too

from common import stabilize  # noqa: E402
from common.cli import (OUTPUT_FLAGS, SAMPLE_FLAGS, base_parser, check_stage_flags,  # noqa: E402
                        int_at_least, non_negative_int, positive_float, positive_int, run_main)

# --precision auto keeps float32 on a CPU until bfloat16 is shown to help this chapter (--precision bfloat16 forces it).
BF16_ON_CPU = False
# what each later stage reads, and what only they read; common.cli.check_stage_flags refuses the rest
STAGE_FLAGS = {"sample": SAMPLE_FLAGS, "evaluate": ("seed", "data", "eval_samples")}
LATER_ONLY = OUTPUT_FLAGS


def build_parser():
    parser = base_parser("vanilla_gan", __doc__, stages=("train", "sample", "evaluate"), epochs=64, batch_size=64)
    parser.add_argument("--latent-dim", type=positive_int, default=100, help="size of the generator's input noise z")
    parser.add_argument("--eval-every", type=non_negative_int, default=0, metavar="N",
                        help="score the generator every N epochs during training (FID/KID/IS with the MNIST "
                             "classifier's features, digit coverage); 0 = only with --stage evaluate")
    parser.add_argument("--eval-samples", type=int_at_least(2), default=2000, metavar="N",
                        help="how many generated and real digits the scores compare")
    parser.add_argument("--lr", type=positive_float, default=8e-4,
                        help="Adam's learning rate for both networks (the book's: 2e-4; 8e-4 gets as far in 40 "
                             "epochs as 2e-4 in 80, README)")
    # the measured default (README): sample from the average of G's weights, one-sided label smoothing
    stabilize.add_flags(parser, average_generator=0.999, label_smoothing=0.9)
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_stage_flags(parser, argv, STAGE_FLAGS, LATER_ONLY)
    stabilize.drop_untyped_smoothing(args, parser, argv)
    options = stabilize.Stabilizers.from_args(args)
    stabilize.check(options, conditional=False, batch_size=args.batch_size)

    import tensorflow as tf  # after argument parsing: --help answers without loading TensorFlow

    from chapters.vanilla_gan import models
    from common.checkpoints import load_model
    from common.data import in_memory
    from common.data.mnist import load_digits
    from common.devices import precision_of, setup_devices
    from common.evaluate import EvaluateEvery, GeneratorScore, evaluate_stage
    from common.gan import GAN
    from common.metrics import mnist_extractor
    from common.run import open_run, open_training_run, use_saved_flags
    from common.train import Schedule, fit_gan, sample_stage
    from datasets import MNIST_8K

    if args.stage == "sample":
        sample_stage(open_run(args, parser, argv, training=False), args.chapter, args.num, args.seed, args.out,
                     args.overwrite)
        return 0

    def the_digits():
        return load_digits(args.data or MNIST_8K)

    def real_images(digits):
        return digits[..., None].astype("float32") / 127.5 - 1.0

    if args.stage == "evaluate":
        run = open_run(args, parser, argv, training=False)
        use_saved_flags(run, args, parser, argv, ("data",))  # the digits it trained on
        generator = load_model(run.model_path("generator"), f"train first: {parser.prog} --run-dir {run}")
        real = real_images(the_digits())
        evaluate_stage(run, generator, GeneratorScore(real, mnist_extractor(), args.eval_samples, args.seed))
        return 0
    run, digits = open_training_run(args, parser, argv, the_digits)
    options = stabilize.Stabilizers.from_args(args)  # a --resume restores the run's saved flags into args
    strategy = setup_devices(args.strategy, precision_of(args), args.seed, bf16_on_cpu=BF16_ON_CPU)
    with strategy.scope():
        gan = GAN(models.build_generator(args.latent_dim), models.build_discriminator(pack=options.pack),
                  args.latent_dim, options)
        gan.compile(d_optimizer=models.optimizer(args.lr), g_optimizer=models.optimizer(args.lr), jit_compile=args.xla)

    def to_images(row: dict) -> dict:
        return {"real": tf.cast(row["real"], tf.float32)[..., None] / 127.5 - 1.0}

    scoring = []
    if args.eval_every:
        score = GeneratorScore(real_images(digits), mnist_extractor(), args.eval_samples, args.seed)
        scoring.append(EvaluateEvery(score, args.eval_every, gan))
    fit_gan(gan, run, Schedule.from_args(args), strategy, len(digits), in_memory({"real": digits}, to_images), callbacks=scoring)
    return 0


if __name__ == "__main__":
    run_main(main)
