"""Chapter 5: SRGAN, 4x super-resolution of photos with a VGG19 perceptual loss.

Training first fits the generator alone on pixel MSE (SRResNet, the paper's initialisation; <run>/pretrain/),
then trains it adversarially against the patch discriminator with content + 1e-3 x adversarial loss (<run>/).
With no --data it trains on random crops of public-domain photos shipped in datasets/srgan_photos/train and
scores on the held-out photos in datasets/srgan_photos/evaluate; --data takes any folder of images (CelebA's
img_align_celeba, DIV2K, your photos).

  make train-srgan                                                # the CPU-sized run: 48 px crops, bicubic skip
  python chapters/srgan/main.py                                   # the book's generator, 96 px crops (a GPU job)
  python chapters/srgan/main.py --stage evaluate                  # PSNR/SSIM vs bicubic on held-out photos
  python chapters/srgan/main.py --stage upscale --input photo.jpg --output photo_x4.png
  python chapters/srgan/main.py --data ~/img_align_celeba --hr-size 256 --batch-size 4 --vgg-weights FILE
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from a plain checkout too

from chapters.srgan.stages import EMBEDDED_CROPS_PER_IMAGE, PHOTOS  # noqa: E402  (light: a fast --help)
from common.cli import (  # noqa: E402
    base_parser, check_stage_flags, frozen_flags, non_negative_float, non_negative_int, positive_float, positive_int,
    run_main)

# what the stages after training read, and what only they read; common.cli.check_stage_flags refuses the rest
STAGE_FLAGS = {"upscale": ("input", "output", "overwrite", "generator", "tile"),
               "evaluate": ("eval_data", "generator", "tile")}
LATER_ONLY = ("input", "output", "overwrite", "generator", "tile")


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("srgan", __doc__, stages=("train", "pretrain", "upscale", "evaluate"), epochs=2,
                         batch_size=8, sampling=False,
                         data_help="folder of training images (any size; default: the embedded photos in "
                                   "datasets/srgan_photos/train)")
    model = parser.add_argument_group("SRGAN")
    model.add_argument("--hr-size", type=positive_int, default=96, metavar="PIXELS",
                       help="side of the HR training crops (a multiple of 4; the book uses 256, the paper 96)")
    model.add_argument("--arch", choices=("book", "paper"), default="book",
                       help="the generator: the book's (ReLU; UpSampling2D, then a 3x3 conv to 256 channels at the "
                            "larger size) or the paper's SRResNet (PReLU; sub-pixel convolutions: a 3x3 conv to "
                            "256 channels at the smaller size, then a pixel shuffle; 4x less upsampling work)")
    model.add_argument("--residual-blocks", type=positive_int, default=16, metavar="N",
                       help="residual blocks in the generator (the book's 16)")
    model.add_argument("--bicubic-skip", action="store_true",
                       help="add the generator's output to a bicubic upscaling of its input, its last conv "
                            "starting at zero (VDSR's global residual): training starts at bicubic quality, so a "
                            "CPU run of minutes already improves on it; off = the book's generator")
    model.add_argument("--pretrain-epochs", type=non_negative_int, default=5, metavar="N",
                       help="epochs of SRResNet pretraining (generator alone, pixel MSE) before the adversarial "
                            "epochs; 0 = start adversarially from random weights, as the book does")
    model.add_argument("--pretrain-lr", type=positive_float, default=1e-4,
                       help="Adam learning rate (beta_1 0.5) of the pretraining (the paper's 1e-4)")
    model.add_argument("--lr", type=positive_float, default=2e-4, help="Adam learning rate (beta_1 0.5) of G and D")
    model.add_argument("--content-loss", choices=("auto", "vgg", "mse"), default="auto",
                       help="vgg: MSE of VGG19 features; mse: pixel MSE; auto: vgg when the VGG19 ImageNet weights "
                            "load (Keras cache, download or --vgg-weights), else mse with a one-line notice")
    model.add_argument("--vgg-weights", metavar="FILE", default=None,
                       help="VGG19 ImageNet weights file (vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5) "
                            "for machines without internet")
    model.add_argument("--vgg-layer", choices=("block3_conv3", "block5_conv4"), default="block3_conv3",
                       help="VGG19 layer of the content loss: the book's block3_conv3 or the paper's block5_conv4")
    model.add_argument("--adversarial-weight", type=non_negative_float, default=1e-3,
                       help="weight of the adversarial term against the content loss's 1")
    model.add_argument("--crops-per-image", type=positive_int, default=None, metavar="N",
                       help=f"random crops of each image per epoch (default: {EMBEDDED_CROPS_PER_IMAGE} for the "
                            "embedded photos, 1 for --data)")
    model.add_argument("--eval-data", metavar="DIR", default=str(PHOTOS / "evaluate"),
                       help="held-out images for the per-epoch validation crops and --stage evaluate")
    up = parser.add_argument_group("upscaling (--stage upscale) and evaluation")
    up.add_argument("--input", metavar="IMG_OR_DIR", default=None, help="image or folder of images to upscale 4x")
    up.add_argument("--output", metavar="PATH", default=None,
                    help="output PNG (or folder, for a folder --input); default: beside the input, named *_x4.png")
    up.add_argument("--generator", metavar="FILE", default=None,
                    help="a saved generator .keras file (default: the run's SRGAN generator, else its SRResNet)")
    up.add_argument("--tile", type=positive_int, default=128, metavar="PIXELS",
                    help="LR tile side of the upsampling layers (about 50 kB of memory per LR pixel of a tile); "
                         "tiles carry the network's receptive field as a margin, so the output is the same for "
                         "every tile size")
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from chapters.srgan import stages
    from common.run import open_run

    check_stage_flags(parser, argv, STAGE_FLAGS, LATER_ONLY)
    if args.stage == "upscale":
        return stages.upscale(args, parser, argv)
    if args.stage == "evaluate":
        return stages.evaluate(args, open_run(args, parser, argv, training=False))
    if _continues_a_run(args):
        run = open_run(args, parser, argv, training=True)  # restores the run's saved flags (typed ones win)
        data = stages.prepare(args)
    else:
        data = stages.prepare(args)  # a new run: check memory, data and weights before a run folder is made
        run = open_run(args, parser, argv, training=True)
    stages.train(frozen_flags(args), run, data)  # settled: training reads them, never changes them
    return 0


def _continues_a_run(args: argparse.Namespace) -> bool:
    """--resume, or --run-dir naming an existing run (e.g. --stage train after --stage pretrain)."""
    return args.resume is not None or bool(args.run_dir and (Path(args.run_dir) / "config.json").is_file())


if __name__ == "__main__":
    run_main(main)
