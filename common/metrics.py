"""GAN and image-restoration metrics: FID, KID, Inception score, PSNR, SSIM, classifier read-outs.

Statistics are numpy/scipy in float64; image operations (resizing, SSIM) use TensorFlow.

Feature-based metrics are named after the network that produced the features ("fid_inception",
"fid_mnist_cnn", ...) because numbers from different networks are not comparable. Note also:
- "inception" here is keras.applications.InceptionV3 with its ImageNet weights. Published FIDs use
  the 2015 TF-slim Inception graph (pytorch-fid / TTUR), whose weights differ, so fid_inception is
  comparable between runs of this project, not with numbers from papers.
- FID and IS are biased by the sample size; compare them only at equal numbers of images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from scipy import linalg

from common.errors import UserError

DEFAULT_MNIST_CLASSIFIER = Path(__file__).resolve().parents[1] / "datasets" / "mnist_classifier.keras"
# The faces CNN trained on datasets/procedural_faces.py (python -m chapters.anime_dcgan.models retrains it).
DEFAULT_FACES_CNN = Path(__file__).resolve().parents[1] / "datasets" / "faces_cnn.keras"
FACES_CNN_SIZE = 32

# Statistics -----------------------------------------------------------------------------------


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), the Frechet distance of two Gaussians.

    Follows pytorch-fid: if S1 S2 is singular (sqrtm returns non-finite values) eps*I is added to
    both covariances; a complex result from round-off is accepted only if its imaginary part is tiny.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched Gaussian parameters: {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets of shape (N, D)."""
    a, b = _features(features_a, "a"), _features(features_b, "b")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def kid(
    features_a: np.ndarray,
    features_b: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): (mean, std) over random subsets.

    Each subset gives the unbiased MMD^2 estimate with the kernel k(x, y) = (x.y / D + 1)^3, so the
    mean can be slightly negative when both sets come from one distribution. subset_size is capped
    at the smaller set; subsets are drawn without replacement within a subset.
    """
    a, b = _features(features_a, "a"), _features(features_b, "b")
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    dim = a.shape[1]
    values = np.empty(subsets)
    for i in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy, k_xy = ((p @ q.T / dim + 1.0) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        off_diagonal = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        values[i] = off_diagonal - 2.0 * k_xy.mean()
    return float(values.mean()), float(values.std())


def inception_score(probabilities: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) as (mean, std) over `splits` equal parts (capped at N parts)."""
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or len(p) < 1:
        raise UserError(f"inception_score expects class probabilities of shape (N, classes), got {p.shape}")
    scores = []
    for part in np.array_split(p, min(splits, len(p))):
        marginal = part.mean(0, keepdims=True)
        kl = np.sum(part * (np.log(part + 1e-12) - np.log(marginal + 1e-12)), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def classifier_readout(probabilities: np.ndarray, threshold: float = 0.9, min_share: float = 0.01) -> dict:
    """What a classifier sees in generated samples: confidence, class coverage and class balance.

    Only samples whose top probability is >= threshold ("confident") are counted in the class
    histogram. A class is "covered" when it receives at least min_share (1%) of the confident
    samples, so a handful of stray samples does not count as covering a class.
    Returns confident_fraction, classes_covered, num_classes, class_kl_from_uniform
    (KL(histogram || uniform): 0 for perfectly balanced classes, log(num_classes) for one class)
    and max/min_class_fraction (largest and smallest share of the confident samples over all classes).
    Without any confident sample the histogram is undefined: KL is NaN and the fractions are 0.
    """
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2:
        raise UserError(f"classifier_readout expects probabilities of shape (N, classes), got {p.shape}")
    num_classes = p.shape[1]
    confident = p.max(1) >= threshold
    counts = np.bincount(p[confident].argmax(1), minlength=num_classes)
    total = counts.sum()
    if total == 0:
        return {
            "confident_fraction": 0.0,
            "classes_covered": 0,
            "num_classes": num_classes,
            "class_kl_from_uniform": float("nan"),
            "max_class_fraction": 0.0,
            "min_class_fraction": 0.0,
        }
    share = counts / total
    nonzero = share > 0
    return {
        "confident_fraction": float(confident.mean()),
        "classes_covered": int(np.sum(share >= min_share)),
        "num_classes": num_classes,
        "class_kl_from_uniform": float(np.sum(share[nonzero] * np.log(share[nonzero] * num_classes))),
        "max_class_fraction": float(share.max()),
        "min_class_fraction": float(share.min()),
    }


def _features(x: np.ndarray, which: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise UserError(f"feature set {which} must have shape (N >= 2, D), got {x.shape}")
    return x


# Image fidelity (super-resolution convention) ---------------------------------------------------

ValueRange = Literal["[-1,1]", "uint8"]


def psnr(
    a: np.ndarray,
    b: np.ndarray,
    value_range: ValueRange = "[-1,1]",
    y_channel: bool = False,
    crop_border: int = 0,
) -> float:
    """Peak signal-to-noise ratio in dB, the mean over images of (N, H, W, C) or one (H, W, C) image.

    value_range: "[-1,1]" for float images in [-1, 1] (the project's convention, peak-to-peak 2) or
    "uint8" for uint8 images in [0, 255]; both give the same dB for the same picture.
    y_channel: compare only the luma Y of YCbCr (ITU-R BT.601, 16..235), as SR papers report.
    crop_border: pixels removed from every side first (SR papers crop the upscaling factor).
    Identical images give inf.
    """
    x, y = _prepare_pair(a, b, value_range, y_channel, crop_border)
    mse = np.mean((x - y) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return float(np.mean(10.0 * np.log10(255.0**2 / mse)))


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    value_range: ValueRange = "[-1,1]",
    y_channel: bool = False,
    crop_border: int = 0,
) -> float:
    """Structural similarity (Wang et al. 2004; 11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03).

    Same arguments as psnr. Channels are averaged (as tf.image.ssim and BasicSR do for RGB); the
    mean over images is returned. Images must be at least 11x11 after cropping.
    """
    import tensorflow as tf

    x, y = _prepare_pair(a, b, value_range, y_channel, crop_border)
    if min(x.shape[1:3]) < 11:
        raise UserError(f"SSIM needs images of at least 11x11 pixels after cropping, got {x.shape[1]}x{x.shape[2]}")
    values = tf.image.ssim(
        tf.constant(x, tf.float32), tf.constant(y, tf.float32), max_val=255.0,
        filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03,
    )
    return float(np.mean(values.numpy()))


def rgb_to_y(images: np.ndarray) -> np.ndarray:
    """Luma Y of YCbCr per ITU-R BT.601 (studio range 16..235) from RGB in [0, 255]; keeps a channel axis."""
    rgb = np.asarray(images, np.float64)
    return 16.0 + (rgb @ np.array([65.481, 128.553, 24.966]))[..., None] / 255.0


def _prepare_pair(
    a: np.ndarray, b: np.ndarray, value_range: ValueRange, y_channel: bool, crop_border: int
) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 (N, H, W, C) on the 0..255 scale, luma-converted and cropped."""
    x, y = _to_255(a, value_range, "a"), _to_255(b, value_range, "b")
    if x.shape != y.shape:
        raise UserError(f"images to compare must have the same shape, got {x.shape} and {y.shape}")
    if y_channel:
        if x.shape[-1] == 1:  # a grey image is the RGB image with R = G = B
            x, y = np.repeat(x, 3, -1), np.repeat(y, 3, -1)
        if x.shape[-1] != 3:
            raise UserError(f"y_channel=True needs RGB or greyscale images, got {x.shape[-1]} channels")
        x, y = rgb_to_y(x), rgb_to_y(y)
    if crop_border:
        c = int(crop_border)
        if min(x.shape[1:3]) <= 2 * c:
            raise UserError(f"crop_border={c} leaves nothing of {x.shape[1]}x{x.shape[2]} images")
        x, y = x[:, c:-c, c:-c], y[:, c:-c, c:-c]
    return x, y


def _to_255(images: np.ndarray, value_range: ValueRange, which: str) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise UserError(f"image {which} must be (H, W, C) or (N, H, W, C), got shape {x.shape}")
    if value_range == "uint8":
        if x.dtype != np.uint8:
            raise UserError(f"value_range='uint8' expects uint8 images, image {which} is {x.dtype}")
        return x.astype(np.float64)
    if value_range != "[-1,1]":
        raise ValueError(f"value_range must be '[-1,1]' or 'uint8', got {value_range!r}")
    if x.dtype == np.uint8:
        raise UserError(f"image {which} is uint8 but value_range='[-1,1]'; pass value_range='uint8'")
    _check_range(x, which)
    return (x.astype(np.float64) + 1.0) * 127.5


def _check_range(x: np.ndarray, which: str) -> None:
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo < -1.001 or hi > 1.001 or not np.isfinite([lo, hi]).all():
        raise UserError(f"images {which} must be float in [-1, 1], found values in [{lo:.3g}, {hi:.3g}]")


# Feature extractors ---------------------------------------------------------------------------


@dataclass
class FeatureExtractor:
    """A network mapping images to (features, class probabilities), evaluated in batches.

    name: metric suffix ("inception", "mnist_cnn"); model: keras.Model with outputs
    [features, probabilities]; preprocess: maps float32 [-1, 1] NHWC images of any size and 1 or 3
    channels to the model's input (a TensorFlow function).
    """

    name: str
    model: object
    preprocess: Callable
    batch_size: int = 64
    _run: Callable | None = field(default=None, init=False, repr=False)

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, D), probabilities (N, classes)) for float32 images in [-1, 1]."""
        import tensorflow as tf

        x = np.asarray(images, np.float32)
        if x.ndim == 3:  # (N, H, W) greyscale
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
            raise UserError(f"{self.name} features need (N, H, W, 1 or 3) images, got shape {x.shape}")
        _check_range(x, f"for {self.name}")
        if self._run is None:
            # No reduce_retracing: preprocess branches on the static channel count and size, and there
            # are at most two batch shapes (full and last) per call anyway.
            self._run = tf.function(lambda batch: self.model(self.preprocess(batch), training=False))
        feats, probs = [], []
        for start in range(0, len(x), self.batch_size):
            f, p = self._run(tf.constant(x[start : start + self.batch_size]))
            feats.append(np.asarray(f, np.float64))
            probs.append(np.asarray(p, np.float64))
        return np.concatenate(feats), np.concatenate(probs)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.outputs(images)[0]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.outputs(images)[1]


def _to_inception(x):
    import tensorflow as tf

    if x.shape[-1] == 1:
        x = tf.image.grayscale_to_rgb(x)
    # InceptionV3 expects [-1, 1] ("tf" preprocessing), which is already the project's range.
    return tf.clip_by_value(tf.image.resize(x, (299, 299), method="bilinear", antialias=True), -1.0, 1.0)


def _to_mnist(x):
    import tensorflow as tf

    if x.shape[-1] == 3:
        x = tf.image.rgb_to_grayscale(x)  # luma weights sum to 1, so [-1, 1] stays [-1, 1]
    if tuple(x.shape[1:3]) != (28, 28):
        x = tf.image.resize(x, (28, 28), method="bilinear", antialias=True)
    return tf.clip_by_value(x, -1.0, 1.0)


def inception_extractor(
    weights: str | os.PathLike = "imagenet", flag: str = "--inception-weights", batch_size: int = 32
) -> FeatureExtractor:
    """InceptionV3 at 299x299: 2048-d average-pool features and the 1000 ImageNet class probabilities."""
    import keras

    from common.pretrained import load_application

    base = load_application("InceptionV3", weights, flag=flag, include_top=True)
    model = keras.Model(base.inputs, [base.get_layer("avg_pool").output, base.output], name="inception_features")
    return FeatureExtractor("inception", model, _to_inception, batch_size)


def mnist_extractor(path: str | os.PathLike = DEFAULT_MNIST_CLASSIFIER, batch_size: int = 256) -> FeatureExtractor:
    """The project's MNIST CNN (datasets/train_mnist_classifier.py): 128-d "features" layer + softmax."""
    return _classifier_extractor(path, "mnist_cnn", "probabilities", _to_mnist, batch_size,
                                 "python -m datasets.train_mnist_classifier")


def faces_extractor(path: str | os.PathLike = DEFAULT_FACES_CNN, batch_size: int = 256) -> FeatureExtractor:
    """The faces CNN (datasets/faces_cnn.keras): 128-d "features" and the hair-style probabilities."""
    return _classifier_extractor(path, "faces_cnn", "hair_style", _to_faces_cnn, batch_size,
                                 "python -m chapters.anime_dcgan.models")


def choose_extractor(choice: str, inception_weights: str | os.PathLike | None,
                     fallback: Callable[[], FeatureExtractor], log: Callable[[str], None] = print) -> FeatureExtractor:
    """--extractor auto|inception|<domain network>: InceptionV3 when asked for or when its ImageNet weights are at
    hand (--inception-weights FILE or the Keras cache), else the domain network, saying so in one line."""
    if choice == "inception" or (choice == "auto" and inception_weights):
        return inception_extractor(inception_weights or "imagenet")
    if choice == "auto":
        from common.pretrained import imagenet_weights_file, keras_cache_dir

        cached = keras_cache_dir() / "models" / imagenet_weights_file("InceptionV3")[0]
        if cached.exists():
            return inception_extractor("imagenet")
        extractor = fallback()
        log(f"InceptionV3 ImageNet weights are not in {cached.parent}: scoring with the {extractor.name} network "
            f"(metrics *_{extractor.name}); pass --inception-weights FILE for *_inception")
        return extractor
    return fallback()


def _classifier_extractor(path: str | os.PathLike, name: str, probabilities: str, preprocess: Callable,
                          batch_size: int, how_to_make: str) -> FeatureExtractor:
    """A shipped classifier's "features" layer and its `probabilities` layer, loaded in safe mode."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise UserError(f"the {name} network {path} is missing; make it with {how_to_make}")
    try:
        network = keras.saving.load_model(path, safe_mode=True, compile=False)
        outputs = [network.get_layer("features").output, network.get_layer(probabilities).output]
    except Exception as err:
        raise UserError(f"{path} is not a loadable {name} network with 'features' and '{probabilities}' layers "
                        f"({err})") from None
    return FeatureExtractor(name, keras.Model(network.inputs, outputs, name=f"{name}_features"), preprocess, batch_size)


def _to_faces_cnn(x):
    import tensorflow as tf

    if x.shape[-1] == 1:
        x = tf.image.grayscale_to_rgb(x)
    if tuple(x.shape[1:3]) != (FACES_CNN_SIZE, FACES_CNN_SIZE):
        x = tf.image.resize(x, (FACES_CNN_SIZE, FACES_CNN_SIZE), method="bilinear", antialias=True)
    return tf.clip_by_value(x, -1.0, 1.0)


# Putting it together ---------------------------------------------------------------------------


def generated_metrics(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    fake_probabilities: np.ndarray,
    name: str,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
) -> dict[str, float]:
    """FID, KID and IS from precomputed outputs of the extractor called `name` (cache real features)."""
    kid_mean, kid_std = kid(real_features, fake_features, kid_subsets, kid_subset_size)
    is_mean, is_std = inception_score(fake_probabilities, is_splits)
    return {
        f"fid_{name}": fid(real_features, fake_features),
        f"kid_{name}": kid_mean,
        f"kid_{name}_std": kid_std,
        f"is_{name}": is_mean,
        f"is_{name}_std": is_std,
    }


def evaluate_generated(
    real_images: np.ndarray,
    fake_images: np.ndarray,
    extractor: FeatureExtractor,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
) -> dict[str, float]:
    """FID/KID between real and fake images and IS of the fakes, keys suffixed by extractor.name.

    Images are float32 in [-1, 1], NHWC; e.g. {"fid_mnist_cnn", "kid_mnist_cnn", "kid_mnist_cnn_std",
    "is_mnist_cnn", "is_mnist_cnn_std"}.
    """
    real_features = extractor.features(real_images)
    fake_features, fake_probabilities = extractor.outputs(fake_images)
    return generated_metrics(
        real_features, fake_features, fake_probabilities, extractor.name, kid_subsets, kid_subset_size, is_splits
    )
