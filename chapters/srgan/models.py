"""The book's SRGAN networks (chapter 5) and the VGG19 content loss, fully convolutional in image size.

Generator (SRResNet): 9x9 conv 64 + ReLU, 16 residual blocks (conv3-ReLU-BN-conv3-BN + skip, BN momentum 0.8),
conv3 + BN added to the pre-residual output, two upsampling blocks (UpSampling2D x2, conv3 256, ReLU),
9x9 conv 3 + tanh: an LR image in [-1, 1] of any size -> the 4x larger HR image in [-1, 1].

Discriminator: eight conv blocks (64, 64, 128, 128, 256, 256, 512, 512 filters; strides 1, 2, 1, 2, ...;
LeakyReLU 0.2; BN momentum 0.8 after all but the first), Dense 1024 + LeakyReLU, Dense 1 sigmoid, applied at
every position: a patch of realness probabilities, 16x16 for the book's 256x256 crops, 6x6 for 96x96.

`bicubic_skip=True` adds one idea from later SR networks (VDSR's global residual): the generator's output is
added to a bicubic upscaling of its input, and its last conv starts at zero. Training then starts exactly at
bicubic, and every step that lowers the pixel loss improves on it; the book's net (off) needs thousands of
steps just to learn to reproduce its input, far more than a CPU run of minutes can give it.
"""
from __future__ import annotations

import os
from typing import Callable

import keras
import tensorflow as tf
from keras import layers

from common.gan import loss_scaled, report
from common.stabilize import discriminator_head

SCALE = 4
BN_MOMENTUM = 0.8
VGG_LAYERS = ("block3_conv3", "block5_conv4")  # the book's layers[9] (VGG33) and the paper's VGG54
# The paper rescales VGG feature maps by 1/12.75 "to obtain VGG losses of a scale comparable to the MSE loss".
VGG_RESCALE = 1.0 / 12.75


@keras.saving.register_keras_serializable(package="srgan")
class BicubicResidual(layers.Layer):
    """(lr, residual) -> clip(bicubic 4x upscaling of lr + residual, -1, 1); no weights."""

    def call(self, lr: tf.Tensor, residual: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(bicubic_upscale(tf.cast(lr, residual.dtype)) + residual, -1.0, 1.0)

    def compute_output_shape(self, lr_shape, residual_shape):
        return residual_shape


@keras.saving.register_keras_serializable(package="srgan")
class PixelShuffle(layers.Layer):
    """(h, w, 4c) -> (2h, 2w, c): the rearrangement of the paper's sub-pixel convolution (depth to space)."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.depth_to_space(x, 2)

    def compute_output_shape(self, shape):
        double = lambda side: None if side is None else 2 * side  # noqa: E731
        return (shape[0], double(shape[1]), double(shape[2]), shape[3] // 4)


ARCHS = ("book", "paper")


def build_generator(residual_blocks: int = 16, bicubic_skip: bool = False, arch: str = "book",
                    name: str = "generator") -> keras.Model:
    """arch "book": ReLU, each 2x upsampling an UpSampling2D then a 3x3 conv to 256 channels at the larger size.
    arch "paper" (Ledig et al.): PReLU, each 2x upsampling a 3x3 conv to 256 channels at the smaller size then a
    pixel shuffle to 64 channels (a sub-pixel convolution): a quarter of the book's upsampling work."""
    if arch not in ARCHS:
        raise ValueError(f"unknown generator arch {arch!r}; expected one of {ARCHS}")

    def activate(x: tf.Tensor, at: str) -> tf.Tensor:
        if arch == "paper":
            return layers.PReLU(shared_axes=[1, 2], name=f"{at}_prelu")(x)
        return layers.Activation("relu", name=f"{at}_relu")(x)

    lr = keras.Input((None, None, 3), name="lr")
    x = layers.Conv2D(64, 9, padding="same", name="head_conv")(lr)
    head = activate(x, "head")
    x = head
    for i in range(residual_blocks):
        y = layers.Conv2D(64, 3, padding="same", name=f"res{i}_conv1")(x)
        y = activate(y, f"res{i}")
        y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"res{i}_bn1")(y)
        y = layers.Conv2D(64, 3, padding="same", name=f"res{i}_conv2")(y)
        y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"res{i}_bn2")(y)
        x = layers.Add(name=f"res{i}_add")([x, y])
    x = layers.Conv2D(64, 3, padding="same", name="body_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="body_bn")(x)
    x = layers.Add(name="body_skip")([head, x])
    for i in range(2):
        if arch == "paper":
            x = layers.Conv2D(256, 3, padding="same", name=f"up{i}_conv")(x)
            x = PixelShuffle(name=f"up{i}_shuffle")(x)
        else:
            x = layers.UpSampling2D(2, name=f"up{i}_upsample")(x)
            x = layers.Conv2D(256, 3, padding="same", name=f"up{i}_conv")(x)
        x = activate(x, f"up{i}")
    if not bicubic_skip:
        x = layers.Conv2D(3, 9, padding="same", name="tail_conv")(x)
        sr = layers.Activation("tanh", dtype="float32", name="sr")(x)  # float32 output under mixed precision
        return keras.Model(lr, sr, name=name)
    x = layers.Conv2D(3, 9, padding="same", kernel_initializer="zeros", name="tail_conv")(x)
    residual = layers.Activation("tanh", dtype="float32", name="residual")(x)
    return keras.Model(lr, BicubicResidual(dtype="float32", name="sr")(lr, residual), name=name)


def build_discriminator() -> keras.Model:
    hr = keras.Input((None, None, 3), name="hr")
    x = hr
    for i, (filters, stride) in enumerate(zip((64, 64, 128, 128, 256, 256, 512, 512), (1, 2) * 4)):
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", name=f"block{i}_conv")(x)
        if i:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"block{i}_lrelu")(x)
    x = layers.Dense(1024, name="dense")(x)  # per position: the book's patch discriminator
    x = layers.LeakyReLU(0.2, name="dense_lrelu")(x)
    return keras.Model(hr, discriminator_head(x), name="discriminator")


def optimizer(learning_rate: float = 2e-4) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5)


# --- data: the LR image is the HR image bicubically downsampled ---------------------------------------------

def downsample(hr: tf.Tensor, scale: int = SCALE) -> tf.Tensor:
    """Bicubic 1/scale with antialiasing (like MATLAB's imresize, which SR benchmarks use); keeps [-1, 1]."""
    shape = tf.shape(hr)
    size = tf.stack([shape[-3] // scale, shape[-2] // scale])
    small = tf.image.resize(hr, size, method="bicubic", antialias=True)
    return tf.clip_by_value(small, -1.0, 1.0)


def bicubic_upscale(lr: tf.Tensor, scale: int = SCALE) -> tf.Tensor:
    shape = tf.shape(lr)
    big = tf.image.resize(lr, tf.stack([shape[-3] * scale, shape[-2] * scale]), method="bicubic")
    return tf.clip_by_value(big, -1.0, 1.0)


# --- the VGG19 content loss -----------------------------------------------------------------------------

def vgg_input(images: tf.Tensor) -> tf.Tensor:
    """[-1, 1] RGB -> what VGG19 was trained on: 0..255, BGR, ImageNet mean subtracted (caffe mode).

    The book feeds its [-1, 1] images to VGG directly; VGG then sees a nearly black, mean-shifted picture.
    """
    pixels = (tf.cast(images, tf.float32) + 1.0) * 127.5
    return keras.applications.vgg19.preprocess_input(pixels)


def build_vgg_features(weights: str | os.PathLike | None, layer: str = "block3_conv3",
                       flag: str = "--vgg-weights") -> keras.Model:
    """VGG19 (include_top=False) truncated at `layer`, frozen; its input is [-1, 1] images.

    weights: "imagenet" (Keras cache or download), a weights file, or None (random; tests only).
    Raises common.errors.UserError naming `flag` when the weights cannot be had.
    """
    from common.pretrained import load_application

    if layer not in VGG_LAYERS:
        raise ValueError(f"unknown VGG layer {layer!r}; expected one of {VGG_LAYERS}")
    vgg = load_application("VGG19", weights, flag=flag, include_top=False, input_shape=(None, None, 3))
    vgg.trainable = False
    return keras.Model(vgg.input, vgg.get_layer(layer).output, name=f"vgg19_{layer}")


class ContentLoss:
    """Per-example content loss between SR and HR images in [-1, 1]: pixel MSE, or MSE of VGG19 features."""

    def __init__(self, vgg: keras.Model | None = None) -> None:
        self.vgg = vgg
        self.name = "mse" if vgg is None else f"vgg ({vgg.name.removeprefix('vgg19_')})"

    def __call__(self, hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
        hr, sr = tf.cast(hr, tf.float32), tf.cast(sr, tf.float32)
        if self.vgg is not None:
            hr = tf.stop_gradient(self.vgg(vgg_input(hr), training=False)) * VGG_RESCALE
            sr = self.vgg(vgg_input(sr), training=False) * VGG_RESCALE
        squared = tf.square(tf.cast(hr, tf.float32) - tf.cast(sr, tf.float32))
        return tf.reduce_mean(tf.reshape(squared, [tf.shape(squared)[0], -1]), axis=1)


# --- the two training set-ups, in the shape common.train.fit_gan drives ---------------------------------

class SRResNet(keras.Model):
    """The paper's initialisation: the generator alone, trained on pixel MSE. Batches are {"lr", "hr"}."""

    def __init__(self, generator: keras.Model, **kwargs) -> None:
        super().__init__(**kwargs)
        self.generator = generator
        self.mse = keras.metrics.Mean(name="mse")
        self.built = True

    def compile(self, g_optimizer: keras.optimizers.Optimizer, **kwargs) -> None:
        super().compile(**kwargs)
        self.g_optimizer = loss_scaled(g_optimizer)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.mse]

    def noise(self, batch_size: int, seed: tf.Tensor) -> dict:
        return {}  # no random draws per step: the LR image is the generator's input

    def graph(self) -> tuple[str, Callable[[], tf.Tensor]]:
        """fit_gan's graph for TensorBoard: the generator on a 24x24 LR image."""
        return "generator", lambda: self.generator(tf.zeros([1, 24, 24, 3]), training=False)

    def checkpoint_items(self) -> dict:
        return {"generator": self.generator, "g_optimizer": self.g_optimizer}

    def saved_models(self) -> dict[str, keras.Model]:
        return {"generator": self.generator}

    def training_callbacks(self) -> list[keras.callbacks.Callback]:
        return []  # fit_gan's hook for per-step callbacks (common.gan.GAN's weight average); SRGAN has none

    def build_optimizers(self) -> None:
        self.g_optimizer.build(self.generator.trainable_variables)

    def sample(self, lr) -> tf.Tensor:
        return self.generator(lr, training=False)

    def train_step(self, batch: dict) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            sr = self.generator(batch["lr"], training=True)
            per_example = ContentLoss()(batch["hr"], sr)
            loss = tf.nn.compute_average_loss(per_example)
            scaled = self.g_optimizer.scale_loss(loss)  # inside the tape: mixed precision needs its gradient
        variables = self.generator.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.g_optimizer.apply_gradients(zip(gradients, variables))
        return report({"mse": self.mse}, {"mse": tf.reduce_mean(per_example)})


class SRGAN(SRResNet):
    """Adversarial + content: D learns real HR from SR patches; G minimises content + 1e-3 x BCE(D(SR), real).

    One step: G makes SR once; D is updated on (HR, SR); then G's loss reads the updated D on the same SR.
    """

    tracked = ("d_loss", "g_loss", "content_loss", "adversarial_loss", "d_real", "d_fake")

    def __init__(self, generator: keras.Model, discriminator: keras.Model, content: ContentLoss,
                 adversarial_weight: float = 1e-3, **kwargs) -> None:
        super().__init__(generator, **kwargs)
        from common.losses import BinaryCrossEntropy

        self.discriminator = discriminator
        self.content = content
        self.adversarial_weight = adversarial_weight
        self.bce = BinaryCrossEntropy()
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.tracked}

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer,
                **kwargs) -> None:
        super().compile(g_optimizer, **kwargs)
        self.d_optimizer = loss_scaled(d_optimizer)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def graph(self) -> tuple[str, Callable[[], tf.Tensor]]:
        """fit_gan's graph for TensorBoard: the generator on a 24x24 LR image, the discriminator on its output."""
        forward = lambda: self.discriminator(self.generator(tf.zeros([1, 24, 24, 3]), training=False),  # noqa: E731
                                             training=False)
        return "generator_and_discriminator", forward

    def checkpoint_items(self) -> dict:
        return {"generator": self.generator, "discriminator": self.discriminator,
                "g_optimizer": self.g_optimizer, "d_optimizer": self.d_optimizer}

    def saved_models(self) -> dict[str, keras.Model]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def build_optimizers(self) -> None:
        super().build_optimizers()
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def train_step(self, batch: dict) -> dict[str, tf.Tensor]:
        lr, hr = batch["lr"], batch["hr"]
        with tf.GradientTape() as g_tape:
            sr = self.generator(lr, training=True)
            with tf.GradientTape() as d_tape:
                real_out = self.discriminator(hr, training=True)
                fake_out = self.discriminator(tf.stop_gradient(sr), training=True)
                d_per_example = self.bce.discriminator(real_out, fake_out)
                d_loss = tf.nn.compute_average_loss(d_per_example)
                d_scaled = self.d_optimizer.scale_loss(d_loss)
            d_vars = self.discriminator.trainable_variables
            d_grads = d_tape.gradient(d_scaled, d_vars)
            self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
            content = self.content(hr, sr)
            adversarial = self.bce.generator(self.discriminator(sr, training=True))
            g_per_example = content + self.adversarial_weight * adversarial
            g_loss = tf.nn.compute_average_loss(g_per_example)
            g_scaled = self.g_optimizer.scale_loss(g_loss)
        g_vars = self.generator.trainable_variables
        g_grads = g_tape.gradient(g_scaled, g_vars)
        self.g_optimizer.apply_gradients(zip(g_grads, g_vars))
        values = (d_per_example, g_per_example, content, adversarial, real_out, fake_out)
        return report(self.trackers, {name: tf.reduce_mean(tf.cast(value, tf.float32))
                                      for name, value in zip(self.tracked, values)})


# --- memory of one training step (checked before anything is built) ------------------------------------

_D_FILTERS = (64, 64, 128, 128, 256, 256, 512, 512)
_VGG_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))  # (convs, filters) of VGG19's five blocks


def step_feature_maps(hr_size: int, residual_blocks: int, discriminator: bool = True,
                      vgg_layer: str | None = None, arch: str = "book") -> list[tuple[int, ...]]:
    """Per-example shapes of the tensors one training step keeps for its backward pass.

    Generator: its layers at LR, after each 2x upsampling and at HR; discriminator: its eight conv blocks and
    dense head at HR, three times (D on HR and on SR for its update, on SR again for G's loss); VGG19: its
    layers up to `vgg_layer` on SR.
    """
    hr, lr = hr_size, hr_size // SCALE
    maps = [(hr, hr, 3), (lr, lr, 3)]  # the batch
    maps += [(lr, lr, 64)] * (2 + 6 * residual_blocks + 3)  # head conv+ReLU; per block 2 convs, ReLU, 2 BN, add;
    for side in (lr, 2 * lr):                                # body conv, BN, skip
        if arch == "paper":  # conv at the smaller size, shuffle, PReLU
            maps += [(side, side, 256), (2 * side, 2 * side, 64), (2 * side, 2 * side, 64)]
        else:  # upsampling, conv, ReLU at the larger size
            maps += [(2 * side, 2 * side, 64 if side == lr else 256)] + [(2 * side, 2 * side, 256)] * 2
    maps += [(hr, hr, 3)] * 3  # tail conv, tanh, (bicubic) output
    if discriminator:
        side, blocks = hr, []
        for i, filters in enumerate(_D_FILTERS):
            side = -(-side // (2 if i % 2 else 1))
            blocks += [(side, side, filters)] * (2 if i == 0 else 3)  # conv, BN (not the first), LeakyReLU
        blocks += [(side, side, 1024)] * 2 + [(side, side, 1)] * 2
        maps += blocks * 3
    if vgg_layer:
        side, stop = hr, (3, 3) if vgg_layer == "block3_conv3" else (5, 4)
        vgg = [(hr, hr, 3)]  # preprocess_input
        for block, (convs, filters) in enumerate(_VGG_BLOCKS, start=1):
            last = stop[1] if block == stop[0] else convs
            vgg += [(side, side, filters)] * last
            if block == stop[0]:
                break
            side //= 2
            vgg.append((side, side, filters))  # max pooling
        maps += vgg  # on SR (kept for G's gradient); the HR pass is outside the gradient and freed as it goes
    return maps


def conv_scratch_bytes(hr_size: int, arch: str = "book") -> float:
    """The largest temporary buffer of the backward pass. TensorFlow's CPU convolution gradients unfold their
    input into a (pixels, k*k*channels) matrix, one image at a time; the generator's last conv (9x9 over 256
    channels at HR: 20,736 floats per output pixel) dwarfs every other layer. Counted twice (kernel and input
    gradient): measured on TF 2.x CPU, one such layer peaked at 34,000 floats per HR pixel and the generator's
    whole step at about 38,000 above its activations."""
    return 2.0 * 9 * 9 * (256 if arch == "book" else 64) * hr_size * hr_size * 4


def parameter_count(residual_blocks: int, discriminator: bool = True, arch: str = "book") -> int:
    """Weights of G (and D): the book's 2.04 M (the paper's 1.55 M) + 0.15 M per residual block beyond 16; D 5.2 M."""
    body = (9 * 9 * 3 * 64 + 64) + residual_blocks * (2 * (9 * 64 * 64 + 64) + 8 * 64) + (9 * 64 * 64 + 64 + 4 * 64)
    if arch == "paper":  # two sub-pixel convs 64 -> 256, a tail conv over 64 channels, a PReLU slope per channel
        generator = body + 2 * (9 * 64 * 256 + 256) + (81 * 64 * 3 + 3) + 64 * (1 + residual_blocks + 2)
    else:
        generator = body + (9 * 64 * 256 + 256) + (9 * 256 * 256 + 256) + (81 * 256 * 3 + 3)
    if not discriminator:
        return generator
    convs = sum(9 * cin * cout + cout + (4 * cout if i else 0)
                for i, (cin, cout) in enumerate(zip((3, *_D_FILTERS[:-1]), _D_FILTERS)))
    return generator + convs + 512 * 1024 + 1024 + 1024 + 1
