"""The book's Age-cGAN networks (chapter 3) for 64x64x3 faces, a 100-d z and 6 age classes.

- encoder: image -> z (the "initial latent approximation");
- generator: [z, one-hot age] -> image in [-1, 1];
- discriminator: [image, one-hot age] -> probability that the image is a real face of that age. The book
  tiles the label with a `Lambda`; here `TileLabels` does it, a registered layer that saves and loads with
  safe_mode=True.

Adam(2e-4, beta_1=0.5, epsilon=1e-7) everywhere: the book writes epsilon=10e-8, which is 1e-7 (also Keras'
default), so that is what is used.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from common.gan import ConditionalGAN
from common.stabilize import discriminator_head

IMAGE_SHAPE = (64, 64, 3)
LATENT_DIM = 100
NUM_CLASSES = 6
EPSILON = 1e-7  # the book's 10e-8


@keras.saving.register_keras_serializable(package="age_cgan")
class TileLabels(layers.Layer):
    """(batch, classes) one-hot labels -> (batch, size, size, classes): the label repeated at every pixel."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, labels):
        labels = ops.cast(labels, self.compute_dtype)
        batch, classes = ops.shape(labels)[0], labels.shape[-1]
        return ops.broadcast_to(labels[:, None, None, :], (batch, self.size, self.size, classes))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def _w(units: int, width: float) -> int:
    return max(1, int(round(units * width)))


def build_encoder(latent_dim: int = LATENT_DIM, width: float = 1.0) -> keras.Model:
    """conv 32/64/128/256 (5x5, stride 2; BN on all but the first; LeakyReLU 0.2) -> Dense 4096 -> Dense z.

    `width` scales every layer's filters/units (1.0 = the book's sizes)."""
    image = keras.Input(IMAGE_SHAPE, name="image")
    x = image
    for i, filters in enumerate((32, 64, 128, 256)):
        x = layers.Conv2D(_w(filters, width), 5, strides=2, padding="same", name=f"conv{i + 1}")(x)
        if i:
            x = layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    x = layers.LeakyReLU(0.2)(layers.BatchNormalization(name="bn_dense")(layers.Dense(_w(4096, width), name="dense")(x)))
    z = layers.Dense(latent_dim, dtype="float32", name="z")(x)
    return keras.Model(image, z, name="encoder")


def build_generator(latent_dim: int = LATENT_DIM, num_classes: int = NUM_CLASSES, width: float = 1.0) -> keras.Model:
    """concat(z, age) -> Dense 2048 -> Dense 256*8*8 -> 3x (UpSampling2D, conv 5x5: 128, 64, 3) -> tanh."""
    z = keras.Input((latent_dim,), name="z")
    label = keras.Input((num_classes,), name="age")
    x = layers.Concatenate()([z, label])
    x = layers.Dropout(0.2)(layers.LeakyReLU(0.2)(layers.Dense(_w(2048, width), name="dense1")(x)))
    x = layers.BatchNormalization(name="bn_dense2")(layers.Dense(_w(256, width) * 8 * 8, name="dense2")(x))
    x = layers.Dropout(0.2)(layers.LeakyReLU(0.2)(x))
    x = layers.Reshape((8, 8, _w(256, width)))(x)
    for filters in (128, 64):
        x = layers.Conv2D(_w(filters, width), 5, padding="same", name=f"conv{filters}")(layers.UpSampling2D(2)(x))
        x = layers.LeakyReLU(0.2)(layers.BatchNormalization(momentum=0.8, name=f"bn{filters}")(x))
    x = layers.Conv2D(3, 5, padding="same", name="conv_rgb")(layers.UpSampling2D(2)(x))
    image = layers.Activation("tanh", dtype="float32", name="image")(x)
    return keras.Model([z, label], image, name="generator")


def build_discriminator(num_classes: int = NUM_CLASSES, width: float = 1.0) -> keras.Model:
    """conv 64 (3x3/2) + LeakyReLU, concat the age tiled to 32x32, conv 128/256/512 (3x3/2) + BN + LeakyReLU."""
    image = keras.Input(IMAGE_SHAPE, name="image")
    label = keras.Input((num_classes,), name="age")
    x = layers.LeakyReLU(0.2)(layers.Conv2D(_w(64, width), 3, strides=2, padding="same", name="conv64")(image))
    x = layers.Concatenate()([x, TileLabels(IMAGE_SHAPE[0] // 2, name="tile_age")(label)])
    for filters in (128, 256, 512):
        x = layers.Conv2D(_w(filters, width), 3, strides=2, padding="same", name=f"conv{filters}")(x)
        x = layers.LeakyReLU(0.2)(layers.BatchNormalization(name=f"bn{filters}")(x))
    return keras.Model([image, label], discriminator_head(layers.Flatten()(x)), name="discriminator")


def optimizer(learning_rate: float = 2e-4) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5, epsilon=EPSILON)


def build_age_classifier(num_classes: int = NUM_CLASSES) -> keras.Model:
    """A small CNN that reads a 64x64 procedural face's age class (the evaluate stage's age estimator)."""
    image = keras.Input(IMAGE_SHAPE, name="image")
    # a full-resolution stem: the age marks are lines about one pixel wide that a first strided conv blurs
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(24, 3, padding="same", use_bias=False)(image)))
    for filters in (32, 64, 96, 128):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, layers.Dense(num_classes, activation="softmax", dtype="float32")(x),
                       name="age_classifier")


# --- the CPU default: a conditional DCGAN with a projection discriminator ---------------------------------
#
# The book's pair (above) costs ~70 GFLOP a step at batch 32; on a 2-core CPU a quarter of an hour buys a few
# hundred steps, and its D (age tiled into a hidden layer, BCE) wins before G learns to use the age: the six
# columns of a sample grid come out identical. `--arch dcgan` draws the face at 32x32 with strided transposed
# convolutions (DCGAN, Radford et al. 2016; the age one-hot joins z and is tiled onto every block's input) and
# upsamples it to 64x64 (bilinear, no weights), so everything downstream (encoder, face recognition, the
# classifiers) keeps its 64-px input. Its D average-pools the 64-px face back to 32 and ends in a projection
# head (Miyato & Koyama 2018): score = w.h + <embed(age), h>, i.e. D's verdict is "a real face" *and* "of
# that age" through an inner product with the age's own vector, which makes an age-blind G lose.

CPU_SIZE = 32  # side at which --arch dcgan draws and judges faces


def _normal() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(0.0, 0.02)


def _cpu_widths(filters: int) -> list[int]:
    """Channels from the 4x4 map up to the last hidden layer at 32 px: 4f, 2f, f."""
    return [4 * filters, 2 * filters, filters]


def build_dcgan_generator(latent_dim: int = LATENT_DIM, num_classes: int = NUM_CLASSES, filters: int = 32
                          ) -> keras.Model:
    """[z, one-hot age] -> 64x64x3 in [-1, 1], drawn at 32x32 (4 -> 8 -> 16 -> 32) and upsampled."""
    z = keras.Input((latent_dim,), name="z")
    label = keras.Input((num_classes,), name="age")
    widths = _cpu_widths(filters)
    x = layers.Concatenate(name="z_age")([z, label])
    x = layers.Dense(4 * 4 * widths[0], use_bias=False, kernel_initializer=_normal(), name="project")(x)
    x = layers.ReLU()(layers.BatchNormalization(name="bn_project")(layers.Reshape((4, 4, widths[0]))(x)))
    size = 4
    for i, width in enumerate(widths[1:] + [None]):
        x = layers.Concatenate(name=f"age_in{i + 1}")([x, TileLabels(size, name=f"tile_age{i + 1}")(label)])
        size *= 2
        if width is None:
            x = layers.Conv2DTranspose(3, 4, strides=2, padding="same", kernel_initializer=_normal(), name="to_rgb")(x)
            break
        x = layers.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=False, kernel_initializer=_normal(),
                                   name=f"up{i + 1}")(x)
        x = layers.ReLU()(layers.BatchNormalization(name=f"bn{i + 1}")(x))
    x = layers.Activation("tanh", name="tanh")(x)
    image = layers.UpSampling2D(IMAGE_SHAPE[0] // CPU_SIZE, interpolation="bilinear", dtype="float32", name="image")(x)
    return keras.Model([z, label], image, name="generator")


@keras.saving.register_keras_serializable(package="age_cgan")
class Projection(layers.Layer):
    """<embed(label), h> per example: the class-conditional term of a projection discriminator."""

    def build(self, input_shape):
        features_shape, label_shape = input_shape
        self.embedding = self.add_weight(shape=(label_shape[-1], features_shape[-1]), initializer="glorot_uniform",
                                         name="embedding")

    def call(self, inputs):
        features, label = inputs
        embedded = ops.matmul(ops.cast(label, self.compute_dtype), ops.cast(self.embedding, self.compute_dtype))
        return ops.sum(embedded * features, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)


def build_projection_discriminator(num_classes: int = NUM_CLASSES, filters: int = 32) -> keras.Model:
    """[64x64 image, one-hot age] -> P(real face of that age): avg-pool to 32, conv f/2f/4f (4x4, stride 2; BN on
    all but the first; LeakyReLU 0.2), flatten h, then score = Dense(1)(h) + <embed(age), h>."""
    image = keras.Input(IMAGE_SHAPE, name="image")
    label = keras.Input((num_classes,), name="age")
    x = layers.AveragePooling2D(IMAGE_SHAPE[0] // CPU_SIZE, name="to_32px")(image)
    for i, width in enumerate(_cpu_widths(filters)[::-1]):
        x = layers.Conv2D(width, 4, strides=2, padding="same", use_bias=i == 0, kernel_initializer=_normal(),
                          name=f"conv{i + 1}")(x)
        x = layers.LeakyReLU(0.2)(x if i == 0 else layers.BatchNormalization(name=f"bn{i + 1}")(x))
    h = layers.Flatten(name="flatten")(x)
    linear = layers.Dense(1, name="linear")(h)
    score = layers.Add(name="score")([linear, Projection(name="age_projection")([h, label])])
    probability = layers.Activation("sigmoid", dtype="float32", name="probability")(score)
    return keras.Model([image, label], probability, name="discriminator")


class AuxiliaryAgeGAN(ConditionalGAN):
    """The conditional GAN with AC-GAN's auxiliary age classifier (Odena et al. 2017), read off the projection D.

    The projection head scores <embed(age), h>; the same class vectors give a logit <embed(k), h> for every age
    k, i.e. a softmax age classifier on D's features at no extra weight. D also learns to read the age of real
    faces with it (cross-entropy against their true class), and G is also asked to draw faces that D reads as
    the age it was given. The projection term alone left the 19-29 ... 50-59 columns alike (README, Measured).
    One pass of D's trunk per image gives both the verdict and the age logits.
    """

    tracked = ConditionalGAN.tracked + ("d_age", "g_age")

    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int, num_classes: int,
                 age_weight: float, **kwargs) -> None:
        super().__init__(generator, discriminator, latent_dim, num_classes, **kwargs)
        unsupported = set(self.options.active()) - {"loss", "average_generator"}
        if unsupported or self.options.loss == "wgan-gp":
            raise ValueError(f"AuxiliaryAgeGAN's step has no {sorted(unsupported) or ['wgan-gp']}")
        self.age_weight = age_weight
        self.trunk = keras.Model(discriminator.inputs[0], discriminator.get_layer("flatten").output, name="d_trunk")
        self.linear = discriminator.get_layer("linear")
        self.class_vectors = discriminator.get_layer("age_projection")

    def judge(self, images, labels, training: bool = True):
        """(what the loss reads: D's score, or its probability for bce; the logits of every age), one pass."""
        features = self.trunk(images, training=training)
        logits = ops.matmul(features, ops.transpose(ops.cast(self.class_vectors.embedding, features.dtype)))
        score = tf.cast(self.linear(features), tf.float32) + tf.reduce_sum(
            tf.cast(labels, tf.float32) * tf.cast(logits, tf.float32), axis=-1, keepdims=True)
        return (score if self.options.loss != "bce" else tf.sigmoid(score)), tf.cast(logits, tf.float32)

    def age_logits(self, images, training: bool = True):
        """D's logit <embed(k), h(images)> for every age k: the projection term of each possible label."""
        return self.judge(images, tf.zeros([tf.shape(images)[0], self.num_classes]), training)[1]

    def train_step(self, batch: dict) -> dict:
        fake = self.generate(batch, "d")
        with tf.GradientTape() as tape:
            real_out, real_logits = self.judge(batch["real"], batch["labels"])
            fake_out, _ = self.judge(fake, batch["labels_d"])
            per_example = self.adversarial.discriminator(real_out, fake_out, batch["label_noise"])
            d_age = tf.nn.softmax_cross_entropy_with_logits(tf.cast(batch["labels"], tf.float32), real_logits)
            loss = tf.nn.compute_average_loss(per_example + self.age_weight * d_age)
        self._apply(self.d_optimizer, tape, loss, self.discriminator)
        with tf.GradientTape() as tape:
            fake = self.generate(batch, "g")
            verdict, fake_logits = self.judge(fake, batch["labels_g"])
            adversarial = self.adversarial.generator(verdict)
            g_age = tf.nn.softmax_cross_entropy_with_logits(tf.cast(batch["labels_g"], tf.float32), fake_logits)
            loss = tf.nn.compute_average_loss(adversarial + self.age_weight * g_age)
        self._apply(self.g_optimizer, tape, loss, self.generator)
        mean = lambda values: tf.reduce_mean(tf.cast(values, tf.float32))  # noqa: E731
        return self.report({"d_loss": mean(per_example), "g_loss": mean(adversarial), "d_real": mean(real_out),
                            "d_fake": mean(fake_out), "d_age": mean(d_age), "g_age": mean(g_age)})
