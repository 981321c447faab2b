"""common.gan.ConditionalGAN plus a running average of G's weights (`--ema`), for the short CPU default.

A GAN trained for a couple of thousand steps is noisy from step to step; the exponential moving average of its
generator's weights (Karras et al. 2018, Yazici et al. 2019) draws cleaner faces at no training cost. The
average is what the sample grids show and what `models/generator.keras` holds (the raw G is in the checkpoints,
so `--resume` goes on exactly). Everything else is ConditionalGAN's.
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from common.gan import ConditionalGAN


class AveragedConditionalGAN(ConditionalGAN):
    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int, num_classes: int,
                 ema: float = 0.999, **kwargs: Any) -> None:
        super().__init__(generator, discriminator, latent_dim, num_classes, **kwargs)
        self.ema = float(ema)
        self.g_average = keras.models.clone_model(generator)
        self.g_average.set_weights(generator.get_weights())
        self.ema_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_steps")

    def train_step(self, batch):
        logs = super().train_step(batch)
        self.ema_steps.assign_add(1)
        steps = tf.cast(self.ema_steps, tf.float32)
        decay = tf.minimum(self.ema, (1.0 + steps) / (10.0 + steps))  # a short warm-up: early weights fade fast
        for averaged, weight in zip(self.g_average.weights, self.generator.weights):
            value = tf.cast(weight, averaged.dtype)
            averaged.assign(value + tf.cast(decay, averaged.dtype) * (averaged - value))
        return logs

    def checkpoint_items(self) -> dict[str, Any]:
        return {**super().checkpoint_items(), "generator_average": self.g_average, "ema_steps": self.ema_steps}

    def saved_models(self) -> dict[str, keras.Model]:
        return {"generator": self.g_average, "discriminator": self.discriminator}
