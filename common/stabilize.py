"""The book's stabilisation tricks as flags any chapter can switch on.

Each changes either the loss (`--loss`, `--label-smoothing`, `--label-noise`, `--gp-weight`), what the
generator optimises (`--feature-matching`), a penalty on the weights (`--historical-averaging`), or the
discriminator's head or input (`--minibatch-discrimination`, `--pack`). The discriminator changes are made
on the chapter's own network: its last layers must be `discriminator_head(features)` (a Dense "score"
and a sigmoid "probability"), so the features and the raw score can be found by name.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Sequence

from common.cli import explicit_flags, non_negative_float, non_negative_int, positive_float, positive_int
from common.errors import UserError

if TYPE_CHECKING:  # the flags must be importable before TensorFlow is (for a quick --help)
    import keras


def discriminator_head(features, name_prefix: str = "") -> "keras.KerasTensor":
    """Dense(1) "score" then a float32 sigmoid "probability": the book's `Dense(1, activation='sigmoid')`."""
    from keras import layers

    score = layers.Dense(1, name=f"{name_prefix}score")(features)
    return layers.Activation("sigmoid", dtype="float32", name=f"{name_prefix}probability")(score)


@dataclass(frozen=True)
class Stabilizers:
    loss: str = "bce"
    label_smoothing: float = 1.0
    label_noise: float = 0.0
    gp_weight: float = 10.0
    feature_matching: bool = False
    minibatch_discrimination: int = 0
    historical_averaging: float = 0.0
    pack: int = 1
    average_generator: float = 0.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Stabilizers":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def active(self) -> list[str]:
        default = Stabilizers()
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)]


def add_flags(parser: argparse.ArgumentParser, label_smoothing: float | None = 1.0, average_generator: float = 0.0,
              label_noise: float | None = 0.0, historical_averaging: float = 0.0,
              chapter_defaults: dict[str, str] | None = None) -> None:
    """The stabilisation flags, all off by default; a chapter may default some of them on (what its measured
    default run uses). They are the flags' own defaults, so a --resume still restores a run's saved values.
    A default of None means the chapter settles it after parsing; `chapter_defaults` ({dest: how}) tells --help."""
    group = parser.add_argument_group("stabilisation (Salimans et al. 2016, and later losses)")
    group.add_argument("--loss", choices=("bce", "hinge", "wgan-gp"), default="bce",
                       help="adversarial loss: bce (the book's, non-saturating G), hinge, or WGAN with gradient "
                            "penalty (hinge and wgan-gp use the discriminator's raw score)")
    group.add_argument("--gp-weight", type=non_negative_float, default=10.0, help="gradient-penalty weight for --loss wgan-gp")
    # "%(default).0s" keeps argparse's "(default: None)" out of a help that says what the default is
    settled = {dest: f"; {how}%(default).0s" for dest, how in (chapter_defaults or {}).items()}
    group.add_argument("--label-smoothing", type=positive_float, default=label_smoothing, metavar="R",
                       help="one-sided label smoothing: the real target (e.g. 0.9); 1 = off"
                            + settled.get("label_smoothing", ""))
    group.add_argument("--label-noise", type=non_negative_float, default=label_noise, metavar="W",
                       help="noisy labels: real targets drawn from [R-W, R], fake from [0, W] per example; 0 = off"
                            + settled.get("label_noise", ""))
    group.add_argument("--feature-matching", action="store_true",
                       help="G matches the mean of D's last hidden features on real and fake batches")
    group.add_argument("--minibatch-discrimination", type=non_negative_int, default=0, metavar="M",
                       help="add a minibatch-discrimination layer with M kernels before D's output; 0 = off")
    group.add_argument("--historical-averaging", type=non_negative_float, default=historical_averaging, metavar="LAMBDA",
                       help="penalise each network's distance to the average of its past weights; 0 = off")
    group.add_argument("--pack", type=positive_int, default=1, metavar="K",
                       help="PacGAN: D judges K samples at once (batch size must divide by K); 1 = off")
    group.add_argument("--average-generator", type=non_negative_float, default=average_generator, metavar="DECAY",
                       help="sample and save an exponential moving average of G's weights with this decay (e.g. "
                            "0.999; Karras et al.'s smoothed generator) instead of the raw G; 0 = off")


def drop_untyped_smoothing(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """A chapter's default label smoothing is of BCE's real target, which hinge and WGAN-GP do not have: under
    those losses it is dropped unless typed (typed, check() refuses it with the reason)."""
    if args.loss != "bce" and "label_smoothing" not in explicit_flags(parser, argv):
        args.label_smoothing = 1.0


def check(options: Stabilizers, conditional: bool, batch_size: int) -> None:
    """Refuses combinations that cannot work, with the reason (never silently ignores a flag)."""
    if options.loss != "bce" and (options.label_smoothing != 1.0 or options.label_noise):
        raise UserError(f"--label-smoothing and --label-noise change BCE targets; they do not apply to --loss {options.loss}")
    if not 0.0 < options.label_smoothing <= 1.0:
        raise UserError(f"--label-smoothing must be in (0, 1], got {options.label_smoothing}")
    if not 0.0 <= options.label_noise < 0.5:
        raise UserError(f"--label-noise must be in [0, 0.5), got {options.label_noise}")
    if not 0.0 <= options.average_generator < 1.0:
        raise UserError(f"--average-generator must be in [0, 1), got {options.average_generator}")
    if options.pack < 1:
        raise UserError(f"--pack must be at least 1, got {options.pack}")
    if options.pack > 1 and conditional:
        raise UserError("--pack does not apply to a conditional GAN: packed samples would carry different labels")
    if options.pack > 1 and batch_size % options.pack:
        raise UserError(f"--pack {options.pack} needs a batch size divisible by {options.pack}, got {batch_size}")


def _layer(model: keras.Model, name: str, flag: str) -> keras.layers.Layer:
    try:
        return model.get_layer(name)
    except ValueError:
        raise UserError(f"{flag} does not apply to this chapter's discriminator "
                        f"({model.name} has no '{name}' layer to build on)") from None


def _score_layer(discriminator: keras.Model, flag: str) -> keras.layers.Layer:
    return _layer(discriminator, "mbd_score" if any(l.name == "mbd_score" for l in discriminator.layers) else "score",
                  flag)


def discriminator_views(discriminator: keras.Model, options: Stabilizers
                        ) -> tuple[keras.Model, keras.Model, keras.Model | None]:
    """(D as saved: probabilities, what the loss reads, D's last hidden features or None), sharing weights.

    Adds minibatch discrimination before D's head and packs its input K at a time when asked. For --pack the
    chapter builds `discriminator` for K times the channels of one sample.
    """
    import keras

    from common.layers import MinibatchDiscrimination

    inputs = discriminator.inputs
    if options.minibatch_discrimination:
        features = _score_layer(discriminator, "--minibatch-discrimination").input
        if len(features.shape) != 2:
            raise UserError(f"--minibatch-discrimination needs a discriminator that ends in one vector per image; "
                            f"{discriminator.name} scores patches of shape {tuple(features.shape[1:])}")
        mixed = MinibatchDiscrimination(options.minibatch_discrimination, name="minibatch_discrimination")(features)
        discriminator = keras.Model(inputs, discriminator_head(mixed, "mbd_"), name=discriminator.name)
    critic = discriminator
    if options.loss != "bce":
        critic = keras.Model(inputs, _score_layer(discriminator, f"--loss {options.loss}").output, name="critic")
    features = None
    if options.feature_matching:
        features = keras.Model(inputs, _score_layer(discriminator, "--feature-matching").input, name="features")
    if options.pack > 1:
        channels = inputs[0].shape[-1]
        if len(inputs) != 1 or channels % options.pack:
            raise UserError(f"--pack {options.pack} does not apply to this chapter's discriminator")
        shape = (*inputs[0].shape[1:-1], channels // options.pack)
        discriminator, critic = packed(discriminator, options.pack, shape), packed(critic, options.pack, shape)
        features = features and packed(features, options.pack, shape)
    return discriminator, critic, features


def packed(discriminator: keras.Model, k: int, sample_shape: tuple[int, ...]) -> keras.Model:
    """Wraps a network built for K * C channels so that it takes batches of ordinary samples."""
    import keras

    from common.layers import Pack

    samples = keras.Input(sample_shape)
    return keras.Model(samples, discriminator(Pack(k)(samples)), name=f"{discriminator.name}_pack{k}")
