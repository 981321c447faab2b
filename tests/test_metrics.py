"""common.metrics against known answers: closed forms, TensorFlow/scikit-image references, the shipped CNN."""

import os
import tempfile

if "KERAS_HOME" not in os.environ:  # (tests/conftest.py has set it in a suite run)
    os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="keras_home_")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy import linalg  # noqa: E402

from common import metrics  # noqa: E402
from common.errors import UserError  # noqa: E402
from datasets.train_mnist_classifier import mnist_split  # noqa: E402

RNG = np.random.default_rng(0)


def gaussian_closed_form(mu1, var1, mu2, var2):
    """FID of two Gaussians with diagonal covariances: the matrix square root is elementwise."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2)))


# FID -------------------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero():
    x = RNG.normal(size=(2000, 16)) @ RNG.normal(size=(16, 16))
    assert abs(metrics.fid(x, x)) < 1e-6


def test_frechet_distance_matches_closed_form_on_exact_parameters():
    mu1, mu2 = RNG.normal(size=8), RNG.normal(size=8)
    var1, var2 = RNG.uniform(0.2, 3, 8), RNG.uniform(0.2, 3, 8)
    expected = gaussian_closed_form(mu1, var1, mu2, var2)
    assert metrics.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, abs=1e-6)


def test_frechet_distance_full_covariances_match_symmetric_formula():
    # Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), whose argument is symmetric PSD: an independent route.
    a, b = RNG.normal(size=(6, 6)), RNG.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    root1 = linalg.sqrtm(s1).real
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    expected = 1.0 + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(inner))
    mu = np.zeros(6)
    assert metrics.frechet_distance(mu, s1, mu + np.eye(6)[0], s2) == pytest.approx(expected, abs=1e-6)


def test_fid_of_samples_approaches_closed_form():
    mu1, mu2 = np.zeros(8), np.linspace(-1, 1, 8)
    var1, var2 = np.linspace(0.5, 2, 8), np.linspace(2, 0.5, 8)
    a = mu1 + np.sqrt(var1) * RNG.normal(size=(50_000, 8))
    b = mu2 + np.sqrt(var2) * RNG.normal(size=(50_000, 8))
    expected = gaussian_closed_form(mu1, var1, mu2, var2)  # about 4.7
    assert metrics.fid(a, b) == pytest.approx(expected, rel=0.02)


def test_fid_survives_singular_covariances():
    # Fewer samples than dimensions: rank-deficient covariances, handled by the eps*I retry.
    a, b = RNG.normal(size=(10, 32)), RNG.normal(size=(10, 32)) + 1.0
    value = metrics.fid(a, b)
    assert np.isfinite(value) and value > 25  # the mean shift alone contributes 32
    assert abs(metrics.fid(a, a)) < 1e-3


# KID and IS -------------------------------------------------------------------------------------


def test_kid_is_about_zero_for_one_distribution_and_positive_for_shifted():
    a, b = RNG.normal(size=(2000, 16)), RNG.normal(size=(2000, 16))
    same_mean, same_std = metrics.kid(a, b, subsets=20, subset_size=500)
    shifted_mean, _ = metrics.kid(a, b + 0.5, subsets=20, subset_size=500)
    assert abs(same_mean) < 0.01 and same_std < 0.05
    assert shifted_mean > 0.2 and shifted_mean > 20 * abs(same_mean)


def test_kid_is_unbiased_so_it_can_go_negative():
    a = RNG.normal(size=(400, 4))
    values = [metrics.kid(a, RNG.normal(size=(400, 4)), subsets=1, subset_size=50, seed=s)[0] for s in range(40)]
    assert min(values) < 0 < max(values)
    assert abs(np.mean(values)) < 2 * np.std(values) / np.sqrt(len(values)) + 1e-3


def test_inception_score_counts_confident_uniform_classes():
    n, classes = 10, 1000
    labels = np.arange(classes) % n
    confident = np.full((classes, n), 0.001 / (n - 1))
    confident[np.arange(classes), labels] = 0.999
    mean, std = metrics.inception_score(confident, splits=10)
    # Uniform marginal: IS = exp(log n - H(p(y|x))) exactly, about 9.90 for these rows.
    row = confident[0]
    assert mean == pytest.approx(n * np.exp(np.sum(row * np.log(row))), abs=1e-6) and std < 1e-9
    one_class = np.zeros((classes, n))
    one_class[:, 3] = 1.0
    assert metrics.inception_score(one_class)[0] == pytest.approx(1.0, abs=1e-6)
    uncertain = np.full((classes, n), 1.0 / n)
    assert metrics.inception_score(uncertain)[0] == pytest.approx(1.0, abs=1e-6)


def test_classifier_readout_coverage_and_spread():
    def one_hot(labels, confidence):
        p = np.full((len(labels), 10), (1 - confidence) / 9)
        p[np.arange(len(labels)), labels] = confidence
        return p

    # 3 classes with 300 confident samples each, class 7 with 5 (0.55% < 1%: not covered),
    # and 100 unconfident samples of class 9 that must not count at all.
    labels = np.r_[np.repeat([0, 1, 2], 300), np.full(5, 7)]
    probs = np.r_[one_hot(labels, 0.95), one_hot(np.full(100, 9), 0.5)]
    readout = metrics.classifier_readout(probs, threshold=0.9)
    assert readout["classes_covered"] == 3
    assert readout["confident_fraction"] == pytest.approx(905 / 1005)
    assert readout["max_class_fraction"] == pytest.approx(300 / 905)
    assert readout["min_class_fraction"] == 0.0
    balanced = metrics.classifier_readout(one_hot(np.arange(1000) % 10, 0.99))
    assert balanced["classes_covered"] == 10 and balanced["class_kl_from_uniform"] == pytest.approx(0, abs=1e-12)
    collapsed = metrics.classifier_readout(one_hot(np.zeros(50, int), 0.99))
    assert collapsed["classes_covered"] == 1 and collapsed["class_kl_from_uniform"] == pytest.approx(np.log(10))


# PSNR and SSIM ------------------------------------------------------------------------------------


def noisy_pair(shape=(4, 48, 40, 3)):
    a = RNG.uniform(-1, 1, shape).astype(np.float32)
    b = np.clip(a + RNG.normal(0, 0.1, shape), -1, 1).astype(np.float32)
    return a, b


def test_psnr_and_ssim_agree_with_tensorflow_on_rgb():
    a, b = noisy_pair()
    assert metrics.psnr(a, b) == pytest.approx(float(tf.reduce_mean(tf.image.psnr(a, b, 2.0))), abs=1e-3)
    # SSIM's luminance term is not shift-invariant: the reference must see the same picture on [0, 1].
    a01, b01 = (a + 1) / 2, (b + 1) / 2
    assert metrics.ssim(a, b) == pytest.approx(float(tf.reduce_mean(tf.image.ssim(a01, b01, 1.0))), abs=1e-4)
    assert metrics.ssim(a, b) != pytest.approx(float(tf.reduce_mean(tf.image.ssim(a, b, 2.0))), abs=1e-2)
    a8, b8 = (np.round((a + 1) * 127.5).astype(np.uint8), np.round((b + 1) * 127.5).astype(np.uint8))
    assert metrics.psnr(a8, b8, "uint8") == pytest.approx(float(tf.reduce_mean(tf.image.psnr(a8, b8, 255))), abs=1e-3)
    assert metrics.ssim(a8, b8, "uint8") == pytest.approx(float(tf.reduce_mean(tf.image.ssim(a8, b8, 255))), abs=1e-4)


def test_psnr_closed_form_on_rgb_and_bt601_luma():
    grey = RNG.integers(0, 200, (2, 16, 16, 1)).astype(np.uint8)
    shifted = grey + np.uint8(10)
    assert metrics.psnr(grey, shifted, "uint8") == pytest.approx(20 * np.log10(255 / 10))
    # BT.601 studio-range luma scales a grey step by 219/255.
    assert metrics.psnr(grey, shifted, "uint8", y_channel=True) == pytest.approx(20 * np.log10(255 / (10 * 219 / 255)))
    rgb = np.repeat(grey, 3, -1)
    assert metrics.psnr(rgb, rgb + np.uint8(10), "uint8", y_channel=True) == pytest.approx(
        metrics.psnr(grey, shifted, "uint8", y_channel=True))
    white = np.full((1, 1, 1, 3), 255, np.uint8)
    assert metrics.rgb_to_y(white.astype(float)).item() == pytest.approx(235.0)


def test_y_channel_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    a, b = noisy_pair((1, 48, 40, 3))
    y = [metrics.rgb_to_y((im[0].astype(np.float64) + 1) * 127.5)[..., 0] for im in (a, b)]
    reference = structural_similarity(
        y[0], y[1], data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert metrics.ssim(a, b, y_channel=True) == pytest.approx(reference, abs=1e-4)


def test_crop_border_removes_a_corrupted_border():
    a = RNG.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    b = a.copy()
    b[:, :4] = b[:, -4:] = b[:, :, :4] = b[:, :, -4:] = -1.0
    assert np.isfinite(metrics.psnr(a, b)) and metrics.ssim(a, b) < 0.95
    assert metrics.psnr(a, b, crop_border=4) == np.inf
    assert metrics.ssim(a, b, crop_border=4, y_channel=True) == pytest.approx(1.0, abs=1e-6)
    assert np.isfinite(metrics.psnr(a, b, crop_border=3))


def test_image_ranges_are_checked():
    a8 = RNG.integers(0, 256, (1, 16, 16, 3)).astype(np.uint8)
    with pytest.raises(UserError, match="uint8"):
        metrics.psnr(a8, a8)
    with pytest.raises(UserError, match=r"\[-1, 1\]"):
        metrics.psnr(a8.astype(np.float32), a8.astype(np.float32))
    with pytest.raises(UserError, match="same shape"):
        metrics.ssim(a8, a8[:, :12], "uint8")


# The project's MNIST CNN ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    x_train, _, x_test, y_test = mnist_split()
    return metrics.mnist_extractor(), x_train, x_test, y_test


def test_shipped_mnist_classifier_reaches_98_percent_on_heldout_digits(mnist):
    extractor, _, x_test, y_test = mnist
    assert extractor.name == "mnist_cnn"
    accuracy = np.mean(extractor.probabilities(x_test).argmax(1) == y_test)
    assert accuracy >= 0.98, accuracy


def test_mnist_extractor_takes_rgb_images_of_other_sizes(mnist):
    extractor, _, x_test, y_test = mnist
    rgb32 = tf.image.resize(np.repeat(x_test[:300], 3, -1), (32, 32)).numpy()
    assert np.mean(extractor.probabilities(rgb32).argmax(1) == y_test[:300]) >= 0.95
    with pytest.raises(UserError, match=r"\[-1, 1\]"):
        extractor.features((x_test[:4] + 1) * 127.5)


def test_mnist_fid_separates_real_digits_from_noise(mnist):
    extractor, x_train, x_test, _ = mnist
    noise = RNG.uniform(-1, 1, x_test.shape).astype(np.float32)
    real = metrics.evaluate_generated(x_train[:1000], x_test, extractor, kid_subsets=10, kid_subset_size=500)
    fake = metrics.evaluate_generated(x_train[:1000], noise, extractor, kid_subsets=10, kid_subset_size=500)
    assert set(real) == {"fid_mnist_cnn", "kid_mnist_cnn", "kid_mnist_cnn_std", "is_mnist_cnn", "is_mnist_cnn_std"}
    assert fake["fid_mnist_cnn"] > 20 * real["fid_mnist_cnn"]
    assert fake["kid_mnist_cnn"] > 20 * abs(real["kid_mnist_cnn"])
    assert real["is_mnist_cnn"] > 8 > fake["is_mnist_cnn"]  # real digits: confident and spread over 10 classes
