"""The anime-face DCGANs (book chapter 4) at 32, 64 or 128 pixels, and the small face CNN used for scoring.

Two pairs of networks:

- `book`: the book's generator (Dense 2048 -> Dense 256*8*8 + BN -> reshape -> UpSampling2D + 5x5 conv
  blocks of 128 and 64 filters -> 5x5 conv to 3 channels, LeakyReLU 0.2, tanh) and discriminator (conv 128 5x5
  "same" + pool, conv 256 3x3 "valid" + pool, conv 512 3x3 "valid" + pool, flatten, Dense 1024, Dense 1
  sigmoid), trained with SGD (lr 5e-4, momentum 0.9, Nesterov). These are the book's layers at 64x64. At 32
  the generator drops its 64-filter block and the discriminator its 512-filter block; at 128 the generator
  adds a 32-filter block and the discriminator a second 512-filter block, which keeps 18,432 features at the
  flatten.
- `dcgan`: the DCGAN paper's all-convolutional pair (Radford et al. 2016): strided 5x5 transposed
  convolutions with batch norm and ReLU in G (from a 4x4 projection), strided 5x5 convolutions with batch
  norm (none on the first) and LeakyReLU 0.2 in D, weights from N(0, 0.02), Adam 2e-4 with beta_1 0.5.
  Widths follow the common `ngf = ndf = --filters` convention (64: 512-256-128-64 at 64x64).
"""
from __future__ import annotations

import math

import keras
from keras import layers

from common.errors import UserError
from common.metrics import FACES_CNN_SIZE  # the size the shipped faces CNN reads
from common.stabilize import discriminator_head

ARCHS = ("book", "dcgan")
# 28 px is the small celebrity-face DCGAN (7x7 -> 14 -> 28, usually with dropout in D): the dcgan pair only.
IMAGE_SIZES = {"book": (32, 64, 128), "dcgan": (28, 32, 64, 128)}


def check_image_size(arch: str, image_size: int) -> None:
    if arch not in ARCHS:
        raise UserError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if image_size not in IMAGE_SIZES[arch]:
        raise UserError(f"--arch {arch} makes {', '.join(map(str, IMAGE_SIZES[arch]))}-pixel images, "
                        f"not {image_size}; choose --image-size from those")


def build_generator(arch: str = "book", image_size: int = 64, latent_dim: int = 100, filters: int = 64
                    ) -> keras.Model:
    check_image_size(arch, image_size)
    return (_book_generator if arch == "book" else _dcgan_generator)(image_size, latent_dim, filters)


def build_discriminator(arch: str = "book", image_size: int = 64, filters: int = 64, pack: int = 1,
                        dropout: float = 0.0) -> keras.Model:
    """image (size x size x 3*pack) -> probability that it is real; ends in `discriminator_head`.

    `dropout` (dcgan only): Dropout after each of D's LeakyReLUs, as the small 28-px face DCGANs use."""
    check_image_size(arch, image_size)
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"--d-dropout must be in [0, 1), got {dropout}")
    if arch == "book":
        if dropout:
            raise UserError("--d-dropout applies to --arch dcgan (the book's discriminator has no dropout)")
        return _book_discriminator(image_size, filters, pack)
    return _dcgan_discriminator(image_size, filters, pack, dropout)


def optimizers(arch: str) -> tuple[keras.optimizers.Optimizer, keras.optimizers.Optimizer]:
    """(D's, G's) optimizer: the book's Nesterov SGD, or the DCGAN paper's Adam."""
    if arch == "book":
        return tuple(keras.optimizers.SGD(learning_rate=5e-4, momentum=0.9, nesterov=True) for _ in range(2))
    return tuple(keras.optimizers.Adam(learning_rate=2e-4, beta_1=0.5) for _ in range(2))


# --- the book's pair ---------------------------------------------------------------------------------------

def _book_generator(image_size: int, latent_dim: int, filters: int) -> keras.Model:
    blocks = {32: (128,), 64: (128, 64), 128: (128, 64, 32)}[image_size]
    z = keras.Input((latent_dim,), name="z")
    x = layers.LeakyReLU(0.2)(layers.Dense(2048, name="dense_2048")(z))
    x = layers.Dense(256 * 8 * 8, name="dense_16384")(x)
    x = layers.LeakyReLU(0.2)(layers.BatchNormalization(name="bn")(x))
    x = layers.Reshape((8, 8, 256))(x)
    for i, width in enumerate(blocks):
        x = layers.UpSampling2D(name=f"up{i + 1}")(x)
        x = layers.LeakyReLU(0.2)(layers.Conv2D(width, 5, padding="same", name=f"conv{i + 1}_{width}")(x))
    x = layers.UpSampling2D(name=f"up{len(blocks) + 1}")(x)
    x = layers.Conv2D(3, 5, padding="same", name="conv_rgb")(x)
    image = layers.Activation("tanh", dtype="float32", name="tanh")(x)
    return keras.Model(z, image, name="generator")


def _book_discriminator(image_size: int, filters: int, pack: int) -> keras.Model:
    widths = {32: (256,), 64: (256, 512), 128: (256, 512, 512)}[image_size]
    image = keras.Input((image_size, image_size, 3 * pack), name="image")
    x = layers.LeakyReLU(0.2)(layers.Conv2D(128, 5, padding="same", name="conv1_128")(image))
    x = layers.MaxPooling2D(name="pool1")(x)
    for i, width in enumerate(widths):
        x = layers.LeakyReLU(0.2)(layers.Conv2D(width, 3, name=f"conv{i + 2}_{width}")(x))
        x = layers.MaxPooling2D(name=f"pool{i + 2}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.LeakyReLU(0.2)(layers.Dense(1024, name="dense_1024")(x))
    return keras.Model(image, discriminator_head(x), name="discriminator")


# --- the DCGAN paper's pair ---------------------------------------------------------------------------------

def _init() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(0.0, 0.02)


def _bn() -> layers.BatchNormalization:
    # The paper's BN scale starts from N(1, 0.02), like its weights.
    return layers.BatchNormalization(gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02))


def _dcgan_base(image_size: int) -> int:
    """Side of the first (projected) map: 4 for 32/64/128, 7 for 28."""
    return 7 if image_size == 28 else 4


def _dcgan_widths(image_size: int, filters: int) -> list[int]:
    """Channel counts from the first (4x4 or 7x7) map up to the last hidden layer, e.g. 64 px: 8f, 4f, 2f, f."""
    levels = int(math.log2(image_size // _dcgan_base(image_size)))  # 28: 2, 32: 3, 64: 4, 128: 5
    return [filters * min(8, 2 ** (levels - 1 - i)) for i in range(levels)]


def _dcgan_generator(image_size: int, latent_dim: int, filters: int) -> keras.Model:
    widths, base = _dcgan_widths(image_size, filters), _dcgan_base(image_size)
    z = keras.Input((latent_dim,), name="z")
    x = layers.Dense(base * base * widths[0], use_bias=False, kernel_initializer=_init(), name="project")(z)
    x = layers.ReLU()(_bn()(layers.Reshape((base, base, widths[0]))(x)))
    for width in widths[1:]:
        x = layers.Conv2DTranspose(width, 5, strides=2, padding="same", use_bias=False, kernel_initializer=_init())(x)
        x = layers.ReLU()(_bn()(x))
    x = layers.Conv2DTranspose(3, 5, strides=2, padding="same", kernel_initializer=_init(), name="to_rgb")(x)
    image = layers.Activation("tanh", dtype="float32", name="tanh")(x)
    return keras.Model(z, image, name="generator")


def _dcgan_discriminator(image_size: int, filters: int, pack: int, dropout: float = 0.0) -> keras.Model:
    widths = _dcgan_widths(image_size, filters)[::-1]  # f, 2f, ... down to 4x4 (7x7 at 28 px)
    image = keras.Input((image_size, image_size, 3 * pack), name="image")
    x = image
    for i, width in enumerate(widths):
        x = layers.Conv2D(width, 5, strides=2, padding="same", use_bias=i == 0, kernel_initializer=_init())(x)
        x = layers.LeakyReLU(0.2)(x if i == 0 else _bn()(x))
        if dropout:
            x = layers.Dropout(dropout, name=f"dropout{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)  # a Dense on the last map is the paper's last 4x4 convolution
    return keras.Model(image, discriminator_head(x), name="discriminator")


# --- the faces CNN: an offline feature extractor for FID/KID/IS on the procedural faces ----------------------
#
# It scores generated faces, which are softer and noisier than the rendered ones, so it is trained on
# procedural faces drawn at 32 px and at 64 px (shrunk the way common.metrics feeds it larger images) under random
# blur, resampling, noise, mild brightness/contrast/saturation changes and small shifts and zooms
# (`augment_faces`). Colour changes are kept mild and the colour head keeps regressing the true colours, so the
# features still see colour.

_COLOUR_KEYS = ("hair_color", "skin", "eye_color", "background")
_CLASS_HEADS = {"hair_style": 8, "beard": 4, "glasses": 2, "age_class": 6}


def build_faces_cnn() -> keras.Model:
    """32x32x3 in [-1, 1] -> a 128-d "features" layer -> heads for hair style (the "probabilities" the Inception
    score and the class read-out use), beard, glasses, age bucket, and the RGB of hair, skin, eyes, background."""
    image = keras.Input((FACES_CNN_SIZE, FACES_CNN_SIZE, 3), name="image")
    x = image
    for width in (32, 64, 128):  # 32 -> 16 -> 8 -> 4
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    # Batch norm before the ReLU keeps every feature in use: with a plain Dense + ReLU most of the 128 units died
    # early in training (115 of the previous network's features were 0 for every face).
    x = layers.BatchNormalization()(layers.Dense(128, use_bias=False)(x))
    features = layers.ReLU(name="features")(x)
    outputs = {name: layers.Dense(n, activation="softmax", name=name)(features) for name, n in _CLASS_HEADS.items()}
    outputs["colours"] = layers.Dense(3 * len(_COLOUR_KEYS), name="colours")(features)
    return keras.Model(image, outputs, name="faces_cnn")


def faces_targets(count: int, seed: int, render_size: int = FACES_CNN_SIZE) -> tuple:
    """(images 32x32 in [-1, 1], {head: targets}) for `count` procedural faces drawn at `render_size` pixels
    (larger drawings are shrunk as common.metrics shrinks larger images: bilinear with antialiasing)."""
    import numpy as np

    from datasets.procedural_faces import make_dataset, sample_identities

    images, _ages, age_class = make_dataset(count, seed, render_size)
    if render_size != FACES_CNN_SIZE:
        images = shrink_faces(images)
    ids = sample_identities(count, seed)  # make_dataset draws the same identities from the same seed
    targets = {"hair_style": ids["hair_style"], "beard": ids["beard"], "glasses": ids["glasses"].astype(np.int64),
               "age_class": age_class,
               "colours": np.concatenate([ids[k] for k in _COLOUR_KEYS], axis=1).astype(np.float32)}
    return images, targets


def shrink_faces(images):
    """Images in [-1, 1] of any size -> 32x32 the way common.metrics._to_faces_cnn does it."""
    import numpy as np
    import tensorflow as tf

    small = tf.image.resize(np.asarray(images, np.float32), (FACES_CNN_SIZE, FACES_CNN_SIZE), method="bilinear",
                            antialias=True)
    return np.asarray(tf.clip_by_value(small, -1.0, 1.0), np.float32)


def _gaussian_taps(sigma, radius: int):
    """(batch, 2 * radius + 1) normalised Gaussian taps for per-image `sigma` (a (batch,) tensor)."""
    import tensorflow as tf

    k = tf.range(-radius, radius + 1, dtype=tf.float32)[None, :]
    taps = tf.exp(-0.5 * (k / tf.maximum(sigma[:, None], 1e-3)) ** 2)
    return taps / tf.reduce_sum(taps, axis=1, keepdims=True)


def blur_faces(images, sigma):
    """Separable Gaussian blur of (batch, H, W, C) images with a per-image `sigma` in pixels (0: unchanged)."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images, tf.float32)
    sigma = tf.broadcast_to(tf.convert_to_tensor(sigma, tf.float32), tf.shape(images)[:1])
    radius = 3
    taps = _gaussian_taps(sigma, radius)[:, :, None, None, None]  # (batch, taps, 1, 1, 1)
    size = images.shape[1]
    padded = tf.pad(images, [[0, 0], [radius, radius], [0, 0], [0, 0]], "SYMMETRIC")
    x = tf.add_n([taps[:, i] * padded[:, i:i + size] for i in range(2 * radius + 1)])
    padded = tf.pad(x, [[0, 0], [0, 0], [radius, radius], [0, 0]], "SYMMETRIC")
    return tf.add_n([taps[:, i] * padded[:, :, i:i + size] for i in range(2 * radius + 1)])


def augment_faces(images, seed: int | None = None):
    """A random degradation of a batch of 32x32 faces in [-1, 1], each step applied to a random part of the batch:
    zoom 0.9-1.1 and shift up to 2 px, Gaussian blur (sigma 0.3-1.1 px) or resampling through 18-28 px, brightness
    +-0.1, contrast and saturation 0.8-1.2, Gaussian noise (sd up to 0.1, per pixel or in 2x2 blotches).
    Roughly one face in six is left as is. `seed` makes it repeatable (None: TensorFlow's global seed)."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed) if seed is not None else None
    uniform = rng.uniform if rng is not None else tf.random.uniform
    normal = rng.normal if rng is not None else tf.random.normal
    x = tf.convert_to_tensor(images, tf.float32)
    n, size = tf.shape(x)[0], FACES_CNN_SIZE
    u = lambda lo=0.0, hi=1.0: uniform([n], lo, hi)  # noqa: E731
    on = lambda p: tf.cast(u() < p, tf.float32)  # noqa: E731

    # Geometry: out(p) = in((p - c) / s + c - t), bilinear, edges extended.
    geo = on(0.6)
    scale = 1.0 + geo * u(-0.1, 0.1)
    tx, ty = geo * u(-2.0, 2.0), geo * u(-2.0, 2.0)
    c = (size - 1) / 2.0
    zeros = tf.zeros([n])
    transform = tf.stack([1 / scale, zeros, c - c / scale - tx, zeros, 1 / scale, c - c / scale - ty, zeros, zeros], 1)
    x = tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=transform, output_shape=[size, size],
                                              fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")
    # Softness: a Gaussian blur for some faces, a trip through a smaller image for others.
    kind = u()
    x = blur_faces(x, tf.where(kind < 0.45, u(0.3, 1.1), 0.0))
    small = uniform([], 18, 29, tf.int32)
    resampled = tf.image.resize(tf.image.resize(x, [small, small], antialias=True), [size, size])
    resample = tf.cast((kind >= 0.45) & (kind < 0.65), tf.float32)[:, None, None, None]
    x = x + resample * (resampled - x)
    # Colour: brightness, contrast about the image mean, saturation about the grey value.
    col = on(0.6)[:, None, None, None]
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = x + col * ((x - mean) * (u(0.8, 1.2)[:, None, None, None] - 1) + u(-0.1, 0.1)[:, None, None, None])
    grey = tf.reduce_mean(x, axis=3, keepdims=True)
    x = x + col * (x - grey) * (u(0.8, 1.2)[:, None, None, None] - 1)
    # Noise, per pixel or in 2x2 blotches (the colour speckle of a half-trained generator).
    sd = (on(0.5) * u(0.0, 0.1))[:, None, None, None]
    blotchy = tf.cast(u() < 0.5, tf.float32)[:, None, None, None]
    fine, coarse = normal(tf.shape(x)), tf.image.resize(normal([n, size // 2, size // 2, 3]), [size, size])
    x = x + sd * (fine + blotchy * (coarse - fine))
    # Some faces stay clean.
    keep = tf.cast(u() < 0.15, tf.float32)[:, None, None, None]
    x = keep * tf.convert_to_tensor(images, tf.float32) + (1 - keep) * x
    return tf.clip_by_value(x, -1.0, 1.0)


def faces_cnn_accuracy(model: keras.Model, images, targets: dict) -> dict:
    """Accuracy of each class head (and the hair-style accuracy per style), the colour RMSE and the share of
    faces whose hair-style probability reaches 0.9, on images with known targets."""
    import numpy as np

    from datasets.procedural_faces import HAIR_STYLES

    predicted = model.predict(images, batch_size=256, verbose=0)
    report = {f"{name}_accuracy": float(np.mean(predicted[name].argmax(1) == targets[name])) for name in _CLASS_HEADS}
    report["colours_rmse"] = float(np.sqrt(np.mean((predicted["colours"] - targets["colours"]) ** 2)))
    report["hair_style_confident"] = float(np.mean(predicted["hair_style"].max(1) >= 0.9))
    style, hit = targets["hair_style"], predicted["hair_style"].argmax(1) == targets["hair_style"]
    report["hair_style_accuracy_per_style"] = {name: float(np.mean(hit[style == i])) for i, name in
                                               enumerate(HAIR_STYLES) if np.any(style == i)}
    return report


def train_faces_cnn(out, count: int = 12000, epochs: int = 14, seed: int = 1, log=print) -> dict:
    """Trains the faces CNN on `count` procedural faces (seeds 1 and 1001: not the GAN's training faces, which use
    seed 0), half drawn at 32 px and half at 64 px, under `augment_faces`, and reports held-out accuracy on 2,000 more
    faces (seed 2, drawn at 32 px): clean, blurred (sigma 1 px) plus noise (sd 0.05), and drawn at 64 px."""
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    half = count // 2
    x32, y32 = faces_targets(half, seed)
    x64, y64 = faces_targets(count - half, seed + 1000, render_size=64)
    x = np.concatenate([x32, x64])
    y = {k: np.concatenate([y32[k], y64[k]]) for k in y32}
    steps = -(-len(x) // 64)
    data = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            .batch(64).map(lambda im, t: (augment_faces(im), t)).prefetch(2))

    model = build_faces_cnn()
    losses = {name: "sparse_categorical_crossentropy" for name in _CLASS_HEADS} | {"colours": "mse"}
    weights = {name: 1.0 for name in _CLASS_HEADS} | {"colours": 10.0}
    schedule = keras.optimizers.schedules.CosineDecay(1e-4, decay_steps=epochs * steps - 200, alpha=0.02,
                                                      warmup_target=2e-3, warmup_steps=200)
    model.compile(keras.optimizers.Adam(schedule), loss=losses, loss_weights=weights,
                  metrics={name: "accuracy" for name in _CLASS_HEADS})
    model.fit(data, epochs=epochs, verbose=2)

    x_test, y_test = faces_targets(2000, seed + 1)
    x_test64, _ = faces_targets(2000, seed + 1, render_size=64)
    rough = blur_faces(x_test, 1.0).numpy() + np.random.default_rng(seed).normal(0, 0.05, x_test.shape)
    report = faces_cnn_accuracy(model, x_test, y_test)
    report["degraded"] = {"blur1_noise0.05": faces_cnn_accuracy(model, np.clip(rough, -1, 1).astype(np.float32),
                                                                y_test),
                          "drawn_at_64": faces_cnn_accuracy(model, x_test64, y_test)}
    shipped = build_faces_cnn()  # the same network without the optimizer's state: a smaller file
    shipped.set_weights(model.get_weights())
    shipped.save(out)
    log(f"wrote {out}; held-out (2,000 faces): " + ", ".join(
        f"{k} {v:.3f}" for k, v in report.items() if isinstance(v, float)))
    per_style = report["hair_style_accuracy_per_style"]
    log("  hair style per style: " + ", ".join(f"{k} {v:.3f}" for k, v in per_style.items()))
    for name, sub in report["degraded"].items():
        log(f"  {name}: hair_style {sub['hair_style_accuracy']:.3f} (confident {sub['hair_style_confident']:.3f}), "
            f"age_class {sub['age_class_accuracy']:.3f}, beard {sub['beard_accuracy']:.3f}")
    return report


if __name__ == "__main__":  # python -m chapters.anime_dcgan.models: retrain the shipped faces CNN
    from common.metrics import DEFAULT_FACES_CNN

    train_faces_cnn(DEFAULT_FACES_CNN)
