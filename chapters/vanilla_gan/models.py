"""The book's dense GAN for 28x28 digits (chapter 1): two hidden layers of 500 units on each side."""
from __future__ import annotations

import keras
from keras import layers

from common.stabilize import discriminator_head

IMAGE_SHAPE = (28, 28, 1)


def build_generator(latent_dim: int = 100, hidden: int = 500) -> keras.Model:
    """z -> Dense 500 -> Dense 500 -> Dense 784 (tanh) -> 28x28x1 image in [-1, 1]."""
    z = keras.Input((latent_dim,), name="z")
    x = layers.LeakyReLU(0.2)(layers.Dense(hidden)(z))
    x = layers.LeakyReLU(0.2)(layers.Dense(hidden)(x))
    x = layers.Dense(28 * 28)(x)
    x = layers.Activation("tanh", dtype="float32")(x)  # float32 output under mixed precision
    return keras.Model(z, layers.Reshape(IMAGE_SHAPE, dtype="float32")(x), name="generator")


def build_discriminator(hidden: int = 500, pack: int = 1) -> keras.Model:
    """28x28x1 image -> Dense 500 -> Dense 500 -> probability that it is real.

    With `pack` K > 1 the input holds K images stacked on the channel axis (PacGAN).
    """
    image = keras.Input((*IMAGE_SHAPE[:2], pack), name="image")
    x = layers.Flatten()(image)
    x = layers.LeakyReLU(0.2)(layers.Dense(hidden)(x))
    x = layers.LeakyReLU(0.2)(layers.Dense(hidden)(x))
    return keras.Model(image, discriminator_head(x), name="discriminator")


def optimizer(learning_rate: float = 2e-4) -> keras.optimizers.Optimizer:
    """Adam with the DCGAN beta_1 of 0.5; the book's rate is 2e-4 (the CPU default, 8e-4: README)."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5)
