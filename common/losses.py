"""Adversarial losses, per example (so that tf.distribute can average them over the global batch).

A loss object has `discriminator(real_out, fake_out)` and `generator(fake_out)`, each returning one value per
example. Discriminator outputs may be one score per image, shape (B, 1), or a patch of scores (B, H, W, 1);
scores are averaged over everything but the batch axis.
"""
from __future__ import annotations

import tensorflow as tf

_EPSILON = 1e-7


def per_example_mean(values: tf.Tensor) -> tf.Tensor:
    values = tf.cast(values, tf.float32)
    return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def binary_crossentropy(target: tf.Tensor | float, probability: tf.Tensor) -> tf.Tensor:
    """Elementwise BCE of probabilities (the book's sigmoid discriminators), clipped like Keras."""
    probability = tf.clip_by_value(tf.cast(probability, tf.float32), _EPSILON, 1.0 - _EPSILON)
    target = tf.cast(target, tf.float32)
    return -(target * tf.math.log(probability) + (1.0 - target) * tf.math.log(1.0 - probability))


class BinaryCrossEntropy:
    """The original GAN loss with the non-saturating generator objective.

    `real_label` < 1 is one-sided label smoothing (Salimans et al. 2016): only the real target is softened.
    `label_noise` w > 0 draws targets per example: real from [real_label - w, real_label], fake from [0, w]
    (the book's anime chapter: real in [0.8, 1], fake in [0, 0.2]). `uniform` carries the (B, 2) uniform
    draws for that, made with the step's noise so that runs stay reproducible.
    """

    name = "bce"

    def __init__(self, real_label: float = 1.0, label_noise: float = 0.0) -> None:
        self.real_label, self.label_noise = real_label, label_noise

    def discriminator(self, real_out: tf.Tensor, fake_out: tf.Tensor, uniform: tf.Tensor | None = None) -> tf.Tensor:
        real_target, fake_target = tf.constant(self.real_label), tf.constant(0.0)
        if self.label_noise and uniform is not None:
            count = tf.shape(real_out)[0]
            shape = tf.concat([[count], tf.ones([tf.rank(real_out) - 1], tf.int32)], 0)
            real_target = self.real_label - self.label_noise * tf.reshape(uniform[:count, 0], shape)
            fake_target = self.label_noise * tf.reshape(uniform[:count, 1], shape)
        real = binary_crossentropy(real_target, real_out)
        fake = binary_crossentropy(fake_target, fake_out)
        return per_example_mean(real) + per_example_mean(fake)

    def generator(self, fake_out: tf.Tensor) -> tf.Tensor:
        return per_example_mean(binary_crossentropy(1.0, fake_out))


class Hinge:
    """Hinge loss on raw scores (Lim & Ye 2017; used by SAGAN/BigGAN): D wants real > 1 and fake < -1."""

    name = "hinge"
    needs_scores = True

    def discriminator(self, real_out: tf.Tensor, fake_out: tf.Tensor, uniform: tf.Tensor | None = None) -> tf.Tensor:
        return per_example_mean(tf.nn.relu(1.0 - real_out)) + per_example_mean(tf.nn.relu(1.0 + fake_out))

    def generator(self, fake_out: tf.Tensor) -> tf.Tensor:
        return -per_example_mean(fake_out)


class Wasserstein:
    """WGAN critic loss (Arjovsky et al. 2017); the gradient penalty of WGAN-GP is added in the train step."""

    name = "wgan-gp"
    needs_scores = True

    def __init__(self, drift: float = 0.0) -> None:
        self.drift = drift  # ProGAN's small penalty that keeps real scores near 0

    def discriminator(self, real_out: tf.Tensor, fake_out: tf.Tensor, uniform: tf.Tensor | None = None) -> tf.Tensor:
        loss = per_example_mean(fake_out) - per_example_mean(real_out)
        return loss + self.drift * per_example_mean(tf.square(tf.cast(real_out, tf.float32)))

    def generator(self, fake_out: tf.Tensor) -> tf.Tensor:
        return -per_example_mean(fake_out)


BinaryCrossEntropy.needs_scores = False


def make_loss(name: str, real_label: float = 1.0, label_noise: float = 0.0) -> object:
    if name == "bce":
        return BinaryCrossEntropy(real_label, label_noise)
    if name == "hinge":
        return Hinge()
    if name == "wgan-gp":
        return Wasserstein()
    raise ValueError(f"unknown loss {name!r}")
