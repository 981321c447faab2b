"""The encoder's two training stages as models common.train.fit_gan runs, like the GAN stage: checkpoints and an
exact --resume, TensorBoard, the NaN guard, --strategy and --precision come from the shared loop.

- EncoderTraining (--stage encoder): E learns to invert the trained G. Each step draws z and an age y, makes
  G(z, y) and moves E(G(z, y)) towards z (the book's euclidean distance), plus a pixel term: G(E(x), y) close
  to x. It needs no real face: its batches are the step's own draws.
- EncoderOptimization (--stage optimize): the paper's identity-preserving optimisation, applied to E's weights
  on real faces: G(E(x), y_x) should be the same person as x to a face-recognition net (FR).

G and FR are never trained here; only the encoder and its Adam are checkpointed.
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from chapters.age_cgan.models import NUM_CLASSES
from common import seeds
from common.gan import loss_scaled, report

# The encoder's latent error is a distance over 100 numbers (~3-10); a mean absolute pixel error is ~0.1-0.3.
ENCODER_PIXEL_SCALE = 10.0
# Steps per epoch (one checkpoint, one reconstruction grid and one history row each) of the two stages;
# --encoder-steps and --optimize-steps are rounded up to whole epochs.
ENCODER_EPOCH_STEPS = 100
OPTIMIZE_EPOCH_STEPS = 10


def euclidean(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """The book's euclidean_distance_loss per example: sqrt(sum((a - b)^2))."""
    return tf.sqrt(tf.reduce_sum(tf.square(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)), axis=-1) + 1e-12)


class _EncoderStage(keras.Model):
    """What fit_gan asks of a trainer, for a stage that trains the encoder alone."""

    tracked: tuple[str, ...] = ()

    def __init__(self, encoder: keras.Model, generator: keras.Model, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder, self.generator = encoder, generator
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.tracked}
        self.built = True  # built functional models; fit() under tf.distribute checks this

    def compile(self, e_optimizer: keras.optimizers.Optimizer, **kwargs: Any) -> None:
        super().compile(**kwargs)
        self.e_optimizer = loss_scaled(e_optimizer)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def build_optimizers(self) -> None:
        self.e_optimizer.build(self.encoder.trainable_variables)  # slots exist before a restore

    def checkpoint_items(self) -> dict:
        return {"encoder": self.encoder, "optimizer": self.e_optimizer}

    def training_callbacks(self) -> list[keras.callbacks.Callback]:
        return []

    def graph(self) -> tuple[str, Callable[[], tf.Tensor]]:
        return "encoder", lambda: self.encoder(tf.zeros([1, *self.encoder.inputs[0].shape[1:]]), training=False)

    def _apply(self, tape: tf.GradientTape, loss: tf.Tensor) -> None:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # the replicas' gradients are summed
        with tape:
            scaled = self.e_optimizer.scale_loss(loss / replicas)
        variables = self.encoder.trainable_variables
        self.e_optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))


class EncoderTraining(_EncoderStage):
    """--stage encoder: ||E(G(z, y)) - z|| + ENCODER_PIXEL_SCALE * pixel_weight * |G(E(G(z, y)), y) - G(z, y)|."""

    tracked = ("latent_error", "pixel_error")

    def __init__(self, encoder: keras.Model, generator: keras.Model, pixel_weight: float, **kwargs: Any) -> None:
        super().__init__(encoder, generator, **kwargs)
        self.latent_dim = generator.inputs[0].shape[-1]
        self.pixel_weight = float(pixel_weight)

    def saved_models(self) -> dict[str, keras.Model]:
        return {"encoder": self.encoder}

    def noise(self, batch_size: int, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """A step's z and age, keyed (run seed, ENCODER_STEPS + step): away from the GAN stage's draws."""
        key = seeds.stream(seed, seeds.ENCODER_STEPS)
        classes = tf.random.stateless_uniform([batch_size], key + seeds.ENCODER_LABELS_SHIFT, maxval=NUM_CLASSES,
                                              dtype=tf.int32)
        return {"z": tf.random.stateless_normal([batch_size, self.latent_dim], key),
                "labels": tf.one_hot(classes, NUM_CLASSES)}

    def train_step(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        z, labels = batch["z"], batch["labels"]
        images = self.generator([z, labels], training=False)
        with tf.GradientTape() as tape:
            encoded = tf.cast(self.encoder(images, training=True), tf.float32)
            latent_error = tf.reduce_mean(euclidean(encoded, z))
            pixel_error = tf.reduce_mean(tf.abs(self.generator([encoded, labels], training=False) - images))
            loss = latent_error + ENCODER_PIXEL_SCALE * self.pixel_weight * pixel_error
        self._apply(tape, loss)
        return report(self.trackers, {"latent_error": latent_error, "pixel_error": pixel_error})


class EncoderOptimization(_EncoderStage):
    """--stage optimize: ||FR(G(E(x), y_x)) - FR(x)|| + pixel_weight * |G(E(x), y_x) - x| on real faces x, whose
    FR embeddings come with the batch ("target")."""

    tracked = ("fr_distance",)

    def __init__(self, encoder: keras.Model, generator: keras.Model, fr: keras.Model, pixel_weight: float,
                 **kwargs: Any) -> None:
        super().__init__(encoder, generator, **kwargs)
        self.fr, self.pixel_weight = fr, float(pixel_weight)

    def saved_models(self) -> dict[str, keras.Model]:
        return {"encoder_optimized": self.encoder}

    def noise(self, batch_size: int, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        return {}  # nothing random: the faces are the input

    def train_step(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        x, labels = batch["x"], batch["labels"]
        with tf.GradientTape() as tape:
            # BatchNorm stays in inference mode: fine-tuning moves the weights, not the statistics.
            rebuilt = self.generator([tf.cast(self.encoder(x, training=False), tf.float32), labels], training=False)
            distance = tf.reduce_mean(euclidean(tf.cast(self.fr(rebuilt, training=False), tf.float32),
                                                batch["target"]))
            loss = distance + self.pixel_weight * tf.reduce_mean(tf.abs(rebuilt - x))
        self._apply(tape, loss)
        return report(self.trackers, {"fr_distance": distance})
