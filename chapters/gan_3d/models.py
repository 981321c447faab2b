"""The book's 3D-GAN networks (chapter 2, after Wu et al. 2016): 3-D (transposed) convolutions on voxel grids.

generator:      z (1,1,1,200) -> ConvT 512 (k4 s1 valid) -> 4³ -> ConvT 256 -> 8³ -> ConvT 128 -> 16³
                -> ConvT 64 -> 32³ -> ConvT 1, sigmoid -> 64³              (kernel 4, stride 2 'same'; BN + ReLU)
discriminator:  64³x1 -> Conv 64 -> 32³ -> Conv 128 -> 16³ -> Conv 256 -> 8³ -> Conv 512 -> 4³
                -> Conv 1 (k4 s1 valid), sigmoid -> 1                      (kernel 4, stride 2 'same'; BN + LeakyReLU 0.2)

`cube_len=32` drops the 64-filter block on both sides (32³ volumes). `width` scales every hidden filter count
(1.0 = the book's).
"""
from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf
from keras import layers, ops

from common import seeds
from common.gan import GAN, stabilizer_draws
from common.stabilize import discriminator_head

LATENT_DIM = 200
# Keras' default 0.99 leaves the moving statistics near their start for the first few hundred steps, so the
# inference-mode samples of a short CPU run come out empty; 0.9 follows the batch statistics within ~20 steps.
BN_MOMENTUM = 0.9
BOOK_G_FILTERS = (512, 256, 128, 64)
BOOK_D_FILTERS = (64, 128, 256, 512)
# --connectivity's penalty runs on this many of each G update's fakes: its side-many dilations and their gradient
# add about 2-3 s to the CPU default's 30-s epoch for 4 of its 16 volumes, about 6 s for 8 (measured here)
CONNECTIVITY_SAMPLES = 4


def _hidden_filters(book: tuple[int, ...], cube_len: int, width: float, generator: bool) -> list[int]:
    if cube_len not in (32, 64):
        raise ValueError(f"cube_len must be 32 or 64, got {cube_len}")
    filters = list(book) if cube_len == 64 else ([*book[:3]] if generator else [*book[1:]])
    return [max(1, round(f * width)) for f in filters]


def build_generator(cube_len: int = 64, latent_dim: int = LATENT_DIM, width: float = 1.0,
                    occupancy: float | None = None, full_resolution: bool = False) -> keras.Model:
    """`occupancy`, the training shapes' filled fraction, starts the output layer's bias at its logit, so the
    first samples are sparse like the data instead of the half-full cube that D spends its first hundreds of
    steps rejecting (the book's "always a cube"); None keeps Keras' zero bias (sigmoid 0.5 everywhere).

    `full_resolution`: the last stride-2 transposed convolution makes 64·width features (batch norm, ReLU) at
    the output's resolution instead of the occupancy, and a stride-1 3³ convolution makes the occupancy from
    them. At 32³ that is the book's 64-filter block, which the 32³ network would otherwise drop: thin legs are
    then drawn by a layer that sees every voxel, not by one 16³ feature per 2³ voxels (README)."""
    z = keras.Input((1, 1, 1, latent_dim), name="z")
    x = z
    for index, filters in enumerate(_hidden_filters(BOOK_G_FILTERS, cube_len, width, True)):
        first = index == 0
        x = layers.Conv3DTranspose(filters, 4, strides=1 if first else 2, padding="valid" if first else "same",
                                   name=f"deconv{index + 1}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{index + 1}")(x)
        x = layers.ReLU(name=f"relu{index + 1}")(x)
    bias = "zeros" if occupancy is None else keras.initializers.Constant(_logit(occupancy))
    if full_resolution:
        x = layers.Conv3DTranspose(max(1, round(64 * width)), 4, strides=2, padding="same", name="deconv_full")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn_full")(x)
        x = layers.ReLU(name="relu_full")(x)
        x = layers.Conv3D(1, 3, padding="same", bias_initializer=bias, name="conv_out")(x)
    else:
        x = layers.Conv3DTranspose(1, 4, strides=2, padding="same", bias_initializer=bias, name="deconv_out")(x)
    volume = layers.Activation("sigmoid", dtype="float32", name="occupancy")(x)
    return keras.Model(z, volume, name="generator")


def build_discriminator(cube_len: int = 64, width: float = 1.0, pack: int = 1) -> keras.Model:
    """The book's last layer, Conv3D(1, kernel 4, 'valid') on the 4³ feature map, is one weighted sum of all
    4·4·4·C features: it is built as Flatten "features" -> Dense(1) "score" -> sigmoid "probability" (the same
    function and parameter count), which is the head common.stabilize expects, so --minibatch-discrimination
    and --feature-matching can find D's last features. With `pack` K > 1 the input holds K volumes on the
    channel axis (PacGAN, --pack)."""
    volume = keras.Input((cube_len, cube_len, cube_len, pack), name="volume")
    x = volume
    for index, filters in enumerate(_hidden_filters(BOOK_D_FILTERS, cube_len, width, False)):
        conv = SlotConv3D if index == 0 and pack > 1 else layers.Conv3D
        x = conv(filters, 4, strides=2, padding="same", name=f"conv{index + 1}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{index + 1}")(x)
        x = layers.LeakyReLU(0.2, name=f"lrelu{index + 1}")(x)
    features = layers.Flatten(name="features")(x)  # 4³ x C
    return keras.Model(volume, discriminator_head(features), name="discriminator")


@keras.saving.register_keras_serializable(package="gan_3d")
class SlotConv3D(layers.Conv3D):
    """Conv3D whose input channels are zero-padded to 8 inside the step: the same weights and the same result.

    On this 2-core CPU, TensorFlow's Conv3D backward pass for 8 volumes of 32³ into 32 filters took 14.5 s with
    2 or 4 input channels and 0.25 s with 8 (one core, TF 2.21), so the first layer of a --pack 2 or 4
    discriminator pads its input. (Other layers are slow at small batches too: the whole width-0.25 D took
    0.5 s forward+backward at batch 16 and 17 s at batch 8, so --pack, which halves the batch D sees, stays out of the CPU default.)
    """

    def call(self, inputs):
        channels = inputs.shape[-1]
        pad = (-channels) % 8
        if pad:
            inputs = ops.pad(inputs, [[0, 0]] * (len(inputs.shape) - 1) + [[0, pad]])
            kernel = ops.pad(self.kernel, [[0, 0]] * 3 + [[0, pad], [0, 0]])
        else:
            kernel = self.kernel
        outputs = ops.conv(inputs, kernel, strides=self.strides, padding=self.padding,
                           dilation_rate=self.dilation_rate)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


def optimizers(g_lr: float, d_lr: float, g_beta1: float, d_beta1: float
               ) -> tuple[keras.optimizers.Optimizer, keras.optimizers.Optimizer]:
    """(D's optimizer, G's optimizer); the book: G Adam(0.0025, beta_1=0.5), D Adam(1e-5, beta_1=0.9)."""
    return (keras.optimizers.Adam(learning_rate=d_lr, beta_1=d_beta1),
            keras.optimizers.Adam(learning_rate=g_lr, beta_1=g_beta1))


class VoxelGAN(GAN):
    """The chapter's GAN: z ~ N(0, z_std) shaped (1, 1, 1, 200), instance noise, and the paper's D throttle.

    With `instance_noise` s > 0, D judges every volume (real or generated, in both updates) with N(0, s) noise
    added to each voxel (Sønderby et al. 2016; Arjovsky and Bottou 2017). Real volumes are exactly 0 or 1 and
    G's are not, so without it D can win outright on that alone (batch accuracy 1.0) and stop giving G a
    useful gradient; the noise makes the two overlap, so D has to judge the shape. Sampling is noise-free.

    With `d_acc_threshold` < 1 the discriminator is updated only on steps where its accuracy on the batch
    (real judged > 0.5, fake judged < 0.5) is at most the threshold (Wu et al. 2016 use 0.8), so it cannot
    run away from a generator that learns slower. A skipped step leaves D's weights and optimizer state exactly
    as they were (blended back inside the compiled step, which works under tf.distribute too).

    With `connectivity` W > 0, G's loss also carries W times the soft share of its occupancy that is not joined
    to the shape's body (`disconnected_share`), on the first CONNECTIVITY_SAMPLES fakes of each G update: the
    training shapes are one piece each, and a loose voxel or a leg broken off under the seat costs G directly.
    """

    tracked = ("d_loss", "g_loss", "d_real", "d_fake", "d_acc", "d_updated")

    def __init__(self, generator: keras.Model, discriminator: keras.Model, z_std: float = 0.33,
                 d_acc_threshold: float = 1.0, instance_noise: float = 0.0, connectivity: float = 0.0,
                 **kwargs: Any) -> None:
        latent_dim = generator.inputs[0].shape[-1]
        super().__init__(generator, discriminator, latent_dim, **kwargs)
        self.z_std, self.d_acc_threshold = float(z_std), float(d_acc_threshold)
        self.instance_noise, self.connectivity = float(instance_noise), float(connectivity)
        self.volume_shape = tuple(generator.outputs[0].shape[1:])

    def generator_penalty(self, fake: tf.Tensor) -> tf.Tensor:
        if not self.connectivity:
            return tf.constant(0.0)
        share = tf.reduce_mean(disconnected_share(fake[:CONNECTIVITY_SAMPLES]))
        return self.connectivity * share / tf.distribute.get_strategy().num_replicas_in_sync

    def _latents(self, batch_size: int, seed: tf.Tensor) -> tf.Tensor:
        """z for the D update and for the G update, (2, batch, 1, 1, 1, latent_dim)."""
        return tf.random.stateless_normal([2, batch_size, 1, 1, 1, self.latent_dim], seed, stddev=self.z_std)

    def _statistics_batch(self, batch_size: int, key: tf.Tensor) -> tf.Tensor:
        return self._latents(batch_size, key)[1]  # noise()'s z_g, without the instance-noise volumes it draws

    def noise(self, batch_size: int, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        z = self._latents(batch_size, seed)
        uniform = tf.random.stateless_uniform([batch_size, 3], seeds.stream(seed, seeds.STABILIZER_UNIFORMS))
        draws = {"z_d": z[0], "z_g": z[1], **stabilizer_draws(uniform)}
        if self.instance_noise:  # per example, so that tf.distribute splits it with the batch
            fields = tf.random.stateless_normal([3, batch_size, *self.volume_shape],
                                                seeds.stream(seed, seeds.INSTANCE_NOISE), stddev=self.instance_noise)
            draws.update({"noise_real": fields[0], "noise_d": fields[1], "noise_g": fields[2]})
        return draws

    def discriminate(self, images: tf.Tensor, batch: dict[str, tf.Tensor], which: str, training: bool = True,
                     network: keras.Model | None = None) -> tf.Tensor:
        if training and self.instance_noise:
            images = images + tf.cast(batch[f"noise_{which}"], images.dtype)
        return super().discriminate(images, batch, which, training, network)

    def train_step(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        tape, per_example, d_loss, real_out, fake_out = self.discriminator_loss(batch)
        # what D reads is a probability for BCE and a raw score (real > 0) for hinge and WGAN-GP
        middle = 0.5 if self.options.loss == "bce" else 0.0
        correct = tf.concat([tf.cast(tf.reshape(real_out, [-1]) > middle, tf.float32),
                             tf.cast(tf.reshape(fake_out, [-1]) < middle, tf.float32)], 0)
        accuracy = tf.reduce_mean(correct)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:  # every replica takes the same decision
            accuracy = context.all_reduce("MEAN", accuracy)
        if self.d_acc_threshold >= 1.0:
            updated = tf.constant(1.0)
            self._apply(self.d_optimizer, tape, d_loss, self.discriminator)
        else:
            update = accuracy <= self.d_acc_threshold
            state = self.discriminator.trainable_variables + list(self.d_optimizer.variables)
            before = [tf.identity(v.value) for v in state]
            self._apply(self.d_optimizer, tape, d_loss, self.discriminator)
            for variable, old in zip(state, before):
                variable.assign(tf.where(update, variable.value, old))
            updated = tf.cast(update, tf.float32)
        g_loss = self.generator_step(batch)
        values = (tf.reduce_mean(per_example), g_loss, _mean(real_out), _mean(fake_out), accuracy, updated)
        return self.report(dict(zip(self.tracked, values)))


def disconnected_share(volumes: tf.Tensor) -> tf.Tensor:
    """Per volume (B, D, H, W, 1) of occupancies: the share of its occupancy not joined to its body, a soft,
    differentiable count of loose voxels (0 for one solid piece).

    The body is reached from its densest occupied voxel by grey-scale reconstruction: side-many times, each voxel
    takes the highest neighbour's reach (26-connectivity) capped at its own occupancy, so a voxel ends with the
    weakest link of its strongest path to the body. A leg behind a gap at 0.1 is reached only at 0.1; its
    gradient lowers the loose voxels and raises the gap's, and G's adversarial loss decides which."""
    occupancy = tf.cast(volumes, tf.float32)
    dense = tf.nn.avg_pool3d(occupancy, 5, 1, "SAME") * occupancy
    flat = tf.reshape(dense, [tf.shape(occupancy)[0], -1])
    start = tf.reshape(tf.one_hot(tf.argmax(flat, axis=1), tf.shape(flat)[1]), tf.shape(occupancy))
    reached = occupancy * tf.stop_gradient(start)
    for _ in range(max(occupancy.shape[1:4])):  # the longest path inside a shape is shorter than the side
        reached = tf.minimum(occupancy, _dilate(reached))
    mass = tf.reduce_sum(occupancy, axis=[1, 2, 3, 4])
    return tf.reduce_sum(occupancy - reached, axis=[1, 2, 3, 4]) / (mass + 1e-6)


def _dilate(volumes: tf.Tensor) -> tf.Tensor:
    """A 3x3x3 maximum filter as three 1-D ones of shifted slices (max_pool3d's gradient is 3.6x slower on a CPU)."""
    for axis in (1, 2, 3):
        padding = [[0, 0]] * 5
        padding[axis] = [1, 1]
        padded, side = tf.pad(volumes, padding), volumes.shape[axis]
        below = tf.gather(padded, tf.range(0, side), axis=axis)
        above = tf.gather(padded, tf.range(2, side + 2), axis=axis)
        volumes = tf.maximum(volumes, tf.maximum(below, above))
    return volumes


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _mean(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.cast(values, tf.float32))
