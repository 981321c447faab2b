"""Chapter 3: Age-cGAN - a conditional GAN that re-draws a face at six ages while keeping who it is.

Stages, each reading the models the previous one saved in the run folder:
  gan       train the conditional GAN: real faces with their true age for D, random ages for G
  encoder   train the encoder to recover z from generated faces (the initial latent approximation)
  optimize  fine-tune the encoder so that face-recognition embeddings of a face and of its reconstruction
            G(E(x), y) agree (identity-preserving optimisation, as the book does)
  age       encode a photo (--image) and draw it at all six ages in one strip (--out); --refine-steps N
            first optimises z for that photo (the paper's per-image optimisation)
  evaluate  age accuracy per class of re-aged faces, identity distance before/after --refine-steps
  all       gan, encoder, optimize, then age on one embedded face (what `make train-age-cgan` runs)

With no --data it trains on the embedded procedural faces (datasets/procedural_faces.py); --data takes the
extracted wiki_crop folder of IMDB-WIKI (python datasets/fetch_wiki.py), streamed from disk.

  python chapters/age_cgan/main.py --stage gan
  python chapters/age_cgan/main.py --stage encoder          # on the latest run (or --run-dir DIR)
  python chapters/age_cgan/main.py --stage optimize
  python chapters/age_cgan/main.py --stage age --image me.jpg --refine-steps 30 --out me_ages.png
  python chapters/age_cgan/main.py --stage evaluate
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from a plain checkout too

from common.cli import (  # noqa: E402  (TensorFlow itself is imported after argument parsing)
    base_parser, check_stage_flags, frozen_flags, int_at_least, non_negative_float, non_negative_int, positive_float,
    positive_int, run_main)
from common.errors import UserError  # noqa: E402
STAGES = ("gan", "encoder", "optimize", "age", "evaluate", "all")
AGE_CLASSIFIER = Path(__file__).resolve().parent / "weights" / "age_classifier.keras"
# what the stages after training read; common.cli.check_stage_flags refuses any other flag typed with them. The
# training stages (gan, encoder, optimize, all) share one set of flags, less the ones only evaluate reads.
_IDENTITY = ("fr_model", "fr_weights", "refine_steps", "refine_lr", "pixel_weight")
STAGE_FLAGS = {"age": (*_IDENTITY, "image", "no_crop", "out", "overwrite"),
               "evaluate": (*_IDENTITY, "seed", "data", "eval_faces", "eval_samples", "eval_identities",
                            "age_classifier")}
LATER_ONLY = ("eval_faces", "eval_samples", "eval_identities", "age_classifier")


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("age_cgan", __doc__, stages=STAGES, default_stage="gan", epochs=20, batch_size=32,
                         sampling=False, data_help="the extracted wiki_crop folder (with wiki.mat) or its "
                                                   "wiki.mat; absent: the embedded procedural faces")
    net = parser.add_argument_group("networks")
    net.add_argument("--arch", choices=("book", "dcgan"), default="book",
                     help="book: the book's E, G and D (scaled by --width); dcgan: a conditional DCGAN that draws at "
                          "32x32 (upsampled to 64) with a projection discriminator, what make train-age-cgan uses "
                          "on a CPU (README)")
    net.add_argument("--filters", type=positive_int, default=32, metavar="F",
                     help="--arch dcgan: channels of G's last and D's first block (4F, 2F, F)")
    net.add_argument("--loss", choices=("bce", "hinge"), default=None,
                     help="adversarial loss (default: bce for --arch book, as the book; hinge for --arch dcgan)")
    net.add_argument("--lr", type=positive_float, default=2e-4, help="Adam learning rate of G and D (beta_1 0.5)")
    net.add_argument("--ema", type=float, default=None, metavar="DECAY",
                     help="keep a running average of G's weights with this decay, used for samples and saved as "
                          "models/generator.keras (default: 0.996, about the last 250 steps, for --arch dcgan; "
                          "0 = off for --arch book)")
    net.add_argument("--age-weight", type=non_negative_float, default=None, metavar="W",
                     help="--arch dcgan: weight of the auxiliary age loss (AC-GAN): D's projection vectors also "
                          "classify the age of real faces, and G is asked to draw the age D reads (default 0.1; "
                          "0 = the projection alone)")
    net.add_argument("--width", type=positive_float, default=1.0,
                     help="scales every layer's filters and units of E, G and D (1.0 = the book's networks; "
                          "make train-age-cgan uses 0.5 to fit a 2-core CPU)")
    net.add_argument("--num-faces", type=positive_int, default=3000, metavar="N",
                     help="how many embedded procedural faces to train on (without --data)")
    net.add_argument("--fr-model", default="face-api", metavar="NAME|PATH.keras",
                     help="face-recognition network for identity: face-api (dlib's ResNet, converted; "
                          "chapters/age_cgan/weights), inception-resnet-v2 (the book's ImageNet network), or a "
                          ".keras model mapping [-1, 1] images to embeddings")
    net.add_argument("--fr-weights", default="imagenet", metavar="imagenet|FILE",
                     help="weights for --fr-model inception-resnet-v2: imagenet (Keras cache/download) or a file")
    steps = parser.add_argument_group("encoder and identity stages")
    steps.add_argument("--encoder-steps", type=positive_int, default=1000, metavar="N",
                       help="--stage encoder: training steps on generated faces (batch --batch-size)")
    steps.add_argument("--optimize-steps", type=positive_int, default=200, metavar="N",
                       help="--stage optimize: encoder fine-tuning steps on real faces")
    steps.add_argument("--optimize-batch", type=positive_int, default=16, metavar="N",
                       help="--stage optimize: faces per step (each passes the face-recognition net twice)")
    age = parser.add_argument_group("ageing a photo (--stage age) and evaluation")
    age.add_argument("--image", metavar="PHOTO", default=None, help="--stage age: the face photo to re-age")
    age.add_argument("--out", metavar="FILE", default=None,
                     help="--stage age and all: where to write the strip (default: <run>/samples/age_<photo>.png)")
    age.add_argument("--no-crop", action="store_true",
                     help="--stage age: resize the whole photo to 64x64 instead of its centre square")
    age.add_argument("--refine-steps", type=non_negative_int, default=0, metavar="N",
                     help="optimise z for the input face for N steps (identity loss) before drawing it; "
                          "--stage evaluate compares 0 with N (default there: 30)")
    age.add_argument("--refine-lr", type=positive_float, default=0.02, help="Adam learning rate of the z refinement")
    age.add_argument("--pixel-weight", type=non_negative_float, default=1.0, metavar="W",
                     help="weight of a mean absolute pixel difference between a face and its reconstruction, "
                          "beside the book's losses of the encoder (x10 there), optimize and refinement steps; FR "
                          "nets ignore colours, hair and background (0 = the book's losses alone)")
    age.add_argument("--eval-faces", type=int_at_least(2), default=32, metavar="N",
                     help="--stage evaluate: held-out faces reconstructed and refined (refine_gain)")
    age.add_argument("--eval-samples", type=int_at_least(2), default=500, metavar="N",
                     help="--stage evaluate: generated faces per age class (age accuracy, FID), and held-out "
                          "real faces per class")
    age.add_argument("--eval-identities", type=int_at_least(2), default=128, metavar="N",
                     help="--stage evaluate: people (z, or procedural identities) drawn at six ages for "
                          "identity_ratio (with 32 the real faces' ratio moved by 0.03 between two seeds)")
    age.add_argument("--age-classifier", default=str(AGE_CLASSIFIER), metavar="PATH.keras",
                     help="--stage evaluate on the embedded faces: the age classifier that reads generated faces")
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_stage_flags(parser, argv, STAGE_FLAGS, LATER_ONLY)
    if args.stage == "age" and not args.image:
        raise UserError("--stage age needs --image PHOTO (a face photo; any size)")
    if args.image and not Path(args.image).is_file():
        raise UserError(f"--image {args.image} does not exist")
    if args.out and args.stage in ("age", "all"):  # checked before hours of training, not after
        from common.run import output_file

        output_file(args.out, args.overwrite, inputs=[args.image])
    if args.strategy == "multiworker" and args.stage in ("encoder", "optimize", "all"):
        raise UserError("the encoder and optimize stages train on one machine (--strategy mirrored spreads them over "
                        "its GPUs); --strategy multiworker is for --stage gan")
    if not 0 < args.width <= 4:
        raise UserError(f"--width must be in (0, 4], got {args.width}")
    from chapters.age_cgan.stages import Stages
    from common.run import open_run, use_saved_flags

    if args.stage in ("gan", "all"):
        from chapters.age_cgan.data import find_wiki

        wiki = find_wiki(args.data) if args.data else None  # checked before a run folder is made
        run = open_run(args, parser, argv, training=True)
        stages = ["gan", "encoder", "optimize", "age"] if args.stage == "all" else ["gan"]
    else:
        run, wiki = open_run(args, parser, argv, training=False), None
        use_saved_flags(run, args, parser, argv, ("width", "data", "num_faces"))  # the networks and faces it trained on
        stages = [args.stage]
    chapter = Stages(frozen_flags(args), run)  # settled: the stages read them, never change them
    if wiki is not None:
        chapter._cache["wiki"] = wiki
    for stage in stages:
        started = time.time()
        getattr(chapter, stage)()
        print(f"[{stage}] done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
