"""SRGAN's stages behind chapters/srgan/main.py: train (SRResNet pretraining, then SRGAN), upscale, evaluate.

Also the memory estimate that refuses a training step too big for this machine before anything is built, and
the per-epoch validation of both phases (the held-out photos whole: samples and PSNR/SSIM).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import time
from pathlib import Path
from typing import Sequence

PHOTOS = Path(__file__).resolve().parents[2] / "datasets" / "srgan_photos"
EMBEDDED_CROPS_PER_IMAGE = 40
# --precision auto keeps float32 on a CPU until bfloat16's PSNR against bicubic is measured (--precision bfloat16
# forces it).
BF16_ON_CPU = False


def step_memory_bytes(args: argparse.Namespace, vgg_layer: str | None = None) -> float:
    """Memory of one training step of the phase that needs most: activations kept for the backward pass (see
    models.step_feature_maps), the convolution gradients' scratch buffer, and weights with their gradients and
    two Adam moments."""
    from chapters.srgan import models
    from common.devices import precision_of
    from common.memory import activation_bytes

    adversarial = args.stage != "pretrain"
    maps = models.step_feature_maps(args.hr_size, args.residual_blocks, adversarial, vgg_layer if adversarial else None,
                                    args.arch)
    dtype_bytes = 2 if precision_of(args) in ("float16", "bfloat16") else 4  # auto may stay float32: count 4
    weights = 4 * 4 * models.parameter_count(args.residual_blocks, adversarial, args.arch)
    vgg_weights = 4 * 20_024_384 if vgg_layer and adversarial else 0  # VGG19 without its top, loaded whole
    return (activation_bytes(maps, args.batch_size, dtype_bytes) + models.conv_scratch_bytes(args.hr_size, args.arch)
            + weights + vgg_weights)


def check_memory(args: argparse.Namespace, vgg_layer: str | None = None) -> None:
    """One sentence (exit 2) when a training step of these flags cannot fit in this machine's memory."""
    from common.memory import check_fits

    what = "SRResNet pretraining" if args.stage == "pretrain" else "SRGAN training"
    check_fits(step_memory_bytes(args, vgg_layer),
               f"{what} at --hr-size {args.hr_size}, --batch-size {args.batch_size}, --residual-blocks "
               f"{args.residual_blocks}" + (f" with the VGG19 {vgg_layer} content loss" if vgg_layer else ""),
               "--hr-size or --batch-size" + (", or use --content-loss mse" if vgg_layer else ""))


def prepare(args: argparse.Namespace) -> dict:
    """The training crops, the held-out photos (uint8 HR, LR, bicubic) and the content loss (may raise UserError)."""
    import numpy as np

    from chapters.srgan import images
    from chapters.srgan.models import bicubic_upscale
    from common.errors import UserError
    from common.images import to_uint8

    if args.hr_size < 16 or args.hr_size % 16:
        raise UserError(f"--hr-size {args.hr_size} must be a multiple of 16 (the discriminator halves it 4 times)")
    if args.residual_blocks < 1 or args.pretrain_epochs < 0:
        raise UserError("--residual-blocks must be at least 1 and --pretrain-epochs at least 0")
    # before anything is built or decoded (the validation crops alone grow with --hr-size); auto's VGG once loaded
    explicit_vgg = args.content_loss == "vgg" or (args.content_loss == "auto" and args.vgg_weights)
    check_memory(args, args.vgg_layer if explicit_vgg else None)
    folder = Path(args.data) if args.data else PHOTOS / "train"
    per_image = args.crops_per_image or (1 if args.data else EMBEDDED_CROPS_PER_IMAGE)
    count, take_pretrain = images.training_crops(folder, args.hr_size, per_image, 2 * args.seed)
    _, take_train = images.training_crops(folder, args.hr_size, per_image, 2 * args.seed + 1, log=lambda _: None)
    held_out = [image for _, image in images.load_held_out(args.eval_data, flag="--eval-data")]
    val_lr = [images.make_lr(image[None].astype(np.float32) / 127.5 - 1.0) for image in held_out]
    content = choose_content_loss(args)
    if content.vgg is not None and not explicit_vgg:
        check_memory(args, args.vgg_layer)
    return {"count": count, "take_pretrain": take_pretrain, "take_train": take_train,
            "val_hr": held_out, "val_lr": val_lr, "content": content,
            "val_bicubic": [to_uint8(bicubic_upscale(lr).numpy()[0]) for lr in val_lr]}


def choose_content_loss(args: argparse.Namespace, log=print):
    """ContentLoss for --content-loss; auto falls back to pixel MSE (one line) when no VGG19 weights load."""
    from chapters.srgan.models import ContentLoss, build_vgg_features
    from common.errors import UserError

    if args.content_loss == "mse":
        return ContentLoss()
    weights = args.vgg_weights or "imagenet"
    if args.content_loss == "vgg" or args.vgg_weights:  # asked for VGG explicitly: no silent fallback
        vgg = build_vgg_features(weights, args.vgg_layer)
    else:
        try:
            # Keras announces the download attempt on stdout; offline that would be a second line of noise.
            with contextlib.redirect_stdout(io.StringIO()):
                vgg = build_vgg_features(weights, args.vgg_layer)
        except UserError as error:
            log(f"content loss: falling back to pixel MSE because no VGG19 weights are available ({error})")
            return ContentLoss()
    log(f"content loss: VGG19 {args.vgg_layer} features ({'ImageNet weights' if weights == 'imagenet' else weights})")
    return ContentLoss(vgg)


def train(args: argparse.Namespace, run, data: dict) -> None:
    """SRResNet pretraining into <run>/pretrain (resumed from its checkpoint when it has one, skipped when the
    adversarial phase has begun), then the adversarial epochs into <run> (resumed only from their own
    checkpoint), both on the same generator: the adversarial phase starts from the pretrained weights."""
    from chapters.srgan import models
    from common.checkpoints import checkpoint_candidates
    from common.devices import precision_of, setup_devices
    from common.train import Schedule, fit_gan

    schedule = Schedule.from_args(args)
    strategy = setup_devices(args.strategy, precision_of(args), args.seed, bf16_on_cpu=BF16_ON_CPU)
    with strategy.scope():
        generator = models.build_generator(args.residual_blocks, bicubic_skip=args.bicubic_skip, arch=args.arch)
        pretrain = models.SRResNet(generator)
        pretrain.compile(g_optimizer=models.optimizer(args.pretrain_lr), jit_compile=args.xla)
    content = data["content"]
    (run.root / "content_loss.txt").write_text(content.name + "\n")
    adversarial_begun = bool(checkpoint_candidates(run.checkpoints))
    if args.pretrain_epochs and not adversarial_begun:
        phase = run.phase("pretrain")
        finished = ("{run} has already trained {epochs} epochs; pass --pretrain-epochs N (N > {epochs}) to pretrain "
                    "longer" if args.stage == "pretrain" else
                    "{run} has already trained its {epochs} epochs: the adversarial phase starts from its generator")
        pretraining = dataclasses.replace(schedule, epochs=args.pretrain_epochs,
                                          resume=bool(checkpoint_candidates(phase.checkpoints)),
                                          flags={**schedule.flags, "epochs": args.pretrain_epochs}, finished=finished)
        print(f"SRResNet pretraining (pixel MSE): {phase}")
        fit_gan(pretrain, phase, pretraining, strategy, data["count"], data["take_pretrain"],
                **_validation(pretrain, data, phase), callbacks=[_Scores(pretrain, data)], fresh_each_pass=True)
        if args.stage == "pretrain":
            return
    elif args.stage == "pretrain":
        print(f"{run} has no pretraining to do (--pretrain-epochs 0 or the adversarial phase has started)")
        return
    with strategy.scope():
        gan = models.SRGAN(generator, models.build_discriminator(), content, args.adversarial_weight)
        gan.compile(d_optimizer=models.optimizer(args.lr), g_optimizer=models.optimizer(args.lr),
                    jit_compile=args.xla)
    print(f"SRGAN training (content loss: {content.name} + {args.adversarial_weight:g} x adversarial): {run}")
    # fit_gan restores when `resume` is set: only from this phase's own checkpoint, else it starts afresh
    fit_gan(gan, run, dataclasses.replace(schedule, resume=schedule.resume and adversarial_begun), strategy, data["count"], data["take_train"], **_validation(gan, data, run),
            callbacks=[_Scores(gan, data)], fresh_each_pass=True)


def _validation(model, data: dict, run) -> dict:
    """fit_gan's sample/render: every held-out photo whole, at full size: bicubic | SR | original."""
    from chapters.srgan.images import side_by_side
    from common.images import to_uint8

    def sample():
        rows = [(bicubic, to_uint8(model.generator(lr, training=False).numpy()[0]), hr)
                for lr, bicubic, hr in zip(data["val_lr"], data["val_bicubic"], data["val_hr"])]
        return side_by_side(rows, ("bicubic", "SR (this epoch)", "original"))

    return {"sample": sample, "render": lambda picture: picture}


def _scores_of(guess, hr) -> dict[str, float]:
    """PSNR/SSIM of uint8 images on the Y channel with a 4-pixel border crop (the SR papers' protocol)."""
    from common.metrics import psnr, ssim

    return {"psnr": psnr(guess, hr, "uint8", y_channel=True, crop_border=4),
            "ssim": ssim(guess, hr, "uint8", y_channel=True, crop_border=4)}


def _mean_scores(guesses, truths) -> dict[str, float]:
    import numpy as np

    scores = [_scores_of(guess, hr) for guess, hr in zip(guesses, truths)]
    return {key: float(np.mean([s[key] for s in scores])) for key in ("psnr", "ssim")}


def _Scores(model, data: dict):
    """A callback adding eval/psnr, eval/ssim (and bicubic's) of the whole held-out photos to each epoch."""
    import keras

    from common.images import to_uint8

    bicubic = _mean_scores(data["val_bicubic"], data["val_hr"])

    class Scores(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            guesses = [to_uint8(model.generator(lr, training=False).numpy()[0]) for lr in data["val_lr"]]
            scores = _mean_scores(guesses, data["val_hr"])
            if logs is not None:
                logs.update({f"eval/{k}": v for k, v in scores.items()})
                logs.update({f"eval/{k}_bicubic": v for k, v in bicubic.items()})
            print(f"held-out photos: PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f} "
                  f"(bicubic {bicubic['psnr']:.2f} dB, {bicubic['ssim']:.4f})")

    return Scores()


def _generators(args: argparse.Namespace, run) -> list[tuple[str, Path]]:
    """(label, .keras path) of the generators to use: --generator, else the run's SRGAN and/or SRResNet."""
    from common.errors import UserError

    if args.generator:
        return [("generator", Path(args.generator))]
    found = [(label, path) for label, path in (("srgan", run.model_path("generator")),
                                               ("srresnet", run.root / "pretrain" / "models" / "generator.keras"))
             if path.exists()]
    if not found:
        raise UserError(f"{run} has no saved generator yet; train first: python chapters/srgan/main.py "
                        f"--run-dir {run}, or pass --generator FILE")
    return found


GENERATOR_KIND = "an SRGAN generator, which maps an image (batch, height, width, 3) to the 4x larger one"


def _upscaler(path: Path, tile: int):
    """The Upscaler of a saved generator, refused in one sentence when the file is damaged or holds another kind
    of model (a discriminator, a generator of latent vectors, ...)."""
    import numpy as np

    import chapters.srgan.models  # noqa: F401  (registers BicubicResidual for safe-mode loading)
    from chapters.srgan.inference import Upscaler
    from chapters.srgan.models import SCALE
    from common.checkpoints import check_model_io, load_model
    from common.errors import UserError

    model = load_model(path, "train first with python chapters/srgan/main.py, or pass another --generator")
    check_model_io(model, path, GENERATOR_KIND, inputs=1, input_rank=4, output_rank=4)
    given, made = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    sides = [(i, o) for i, o in zip(given[1:3], made[1:3]) if i is not None and o is not None]
    if given[-1] != 3 or made[-1] != 3 or any(o != SCALE * i for i, o in sides):
        raise UserError(f"{path} is not {GENERATOR_KIND} (it maps {given} to {made})")
    if None in given[1:3]:  # sizes only known when run: try a small image (a wrong model fails here, not mid-file)
        side = 16
        try:
            out = tuple(model(np.zeros((1, side, side, 3), np.float32), training=False).shape)
        except Exception as error:  # Keras/TF raise many kinds for an input a model cannot take
            raise UserError(f"{path} is not {GENERATOR_KIND} (a {side}x{side} image fails in it: "
                            f"{str(error).splitlines()[0][:120]})") from None
        if out != (1, SCALE * side, SCALE * side, 3):
            raise UserError(f"{path} is not {GENERATOR_KIND} (it maps a {side}x{side} image to {out})")
    try:
        return Upscaler(model, tile)
    except ValueError as error:
        raise UserError(f"{path} is not {GENERATOR_KIND} built by this chapter ({error})") from None


def upscale(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    from chapters.srgan import images
    from common.errors import UserError
    from common.run import open_run

    if not args.input:
        raise UserError("--stage upscale needs --input IMAGE_OR_FOLDER")
    pairs = images.plan_outputs(Path(args.input), args.output, args.overwrite)
    if args.generator:
        path = Path(args.generator)
    else:
        path = _generators(args, open_run(args, parser, argv, training=False))[0][1]
    upscaler = _upscaler(path, args.tile)
    for number, (source, target) in enumerate(pairs, start=1):
        started = time.time()
        label = f"[{number}/{len(pairs)}] {source.name}" if len(pairs) > 1 else source.name
        width, height = images.upscale_file(upscaler, source, target, label)
        print(f"{source} -> {target} ({width}x{height}, {time.time() - started:.1f} s)", flush=True)
    return 0


def evaluate(args: argparse.Namespace, run) -> int:
    """PSNR/SSIM on the Y channel (4-pixel border crop) of the held-out images: bicubic vs each generator.

    One line per image and method, then common.evaluate.write_scores' table of the means (psnr_<method>,
    ssim_<method>) into metrics.json and TensorBoard's eval/ scalars."""
    import time

    import numpy as np

    from chapters.srgan import images
    from chapters.srgan.models import bicubic_upscale
    from common.evaluate import write_scores
    from common.images import to_uint8

    started = time.time()
    held_out = images.load_held_out(args.eval_data, flag="--eval-data")
    generators = [(label, _upscaler(path, args.tile)) for label, path in _generators(args, run)]
    rows = {"bicubic": []}
    for name, hr in held_out:
        lr = images.make_lr(hr.astype(np.float32) / 127.5 - 1.0)
        guesses = {"bicubic": to_uint8(bicubic_upscale(lr).numpy())}
        for label, generator in generators:
            guesses[label] = generator(lr)
        for label, guess in guesses.items():
            scores = _scores_of(guess, hr)
            rows.setdefault(label, []).append(scores)
            print(f"{name:32s} {label:9s} PSNR {scores['psnr']:6.2f} dB  SSIM {scores['ssim']:.4f}")
    means = {f"{kind}_{label}": float(np.mean([s[kind] for s in scores]))
             for label, scores in rows.items() for kind in ("psnr", "ssim")}
    epoch = run.epochs_trained()
    protocol = "Y channel (BT.601), 4-pixel border crop, LR = bicubic 1/4"
    write_scores(run, means, epoch, f"mean over {len(held_out)} held-out images, PSNR in dB, {protocol}", started,
                 {"held_out": str(args.eval_data), "images": [n for n, _ in held_out], "protocol": protocol,
                  "epoch": epoch})
    return 0
