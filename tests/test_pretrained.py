"""common.pretrained: weights really load, and every failure is one UserError naming the flag."""

import hashlib
import os
import tempfile

# Keras reads KERAS_HOME at import; keep this module away from any real cache even when run alone.
if "KERAS_HOME" not in os.environ:  # (tests/conftest.py has set it in a suite run)
    os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="keras_home_")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from common import pretrained  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.metrics import inception_extractor  # noqa: E402

VGG_KWARGS = {"include_top": False, "input_shape": (32, 32, 3)}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """An empty Keras cache and an unreachable weights server, whatever network this machine has."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(pretrained, "WEIGHTS_URL", "http://127.0.0.1:9/keras-applications/")


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    model = keras.applications.VGG19(weights=None, **VGG_KWARGS)
    path = tmp_path_factory.mktemp("vgg") / "vgg19_notop.weights.h5"
    model.save_weights(path)
    return model, path


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    model = keras.applications.InceptionV3(weights=None, include_top=True)
    path = tmp_path_factory.mktemp("inception") / "inception_v3.weights.h5"
    model.save_weights(path)
    return model, path


def same_weights(a: keras.Model, b: keras.Model) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def test_vgg_weights_file_is_really_loaded(vgg_file):
    original, path = vgg_file
    loaded = pretrained.load_application("VGG19", weights=path, flag="--vgg-weights", **VGG_KWARGS)
    assert same_weights(loaded, original)
    # A fresh random network differs, so equality above means the file was read.
    assert not same_weights(keras.applications.VGG19(weights=None, **VGG_KWARGS), original)


def test_conv_weights_fit_other_input_sizes(vgg_file):
    original, path = vgg_file
    loaded = pretrained.load_application("VGG19", weights=str(path), include_top=False, input_shape=(64, 64, 3))
    assert same_weights(loaded, original)


def test_inception_extractor_loads_file_and_gives_pool_features_and_probabilities(inception_file):
    original, path = inception_file
    extractor = inception_extractor(weights=path)
    assert extractor.name == "inception"
    assert same_weights(extractor.model, original)
    grey_digits = np.random.default_rng(0).uniform(-1, 1, (3, 28, 28, 1)).astype(np.float32)
    features, probabilities = extractor.outputs(grey_digits)
    assert features.shape == (3, 2048) and probabilities.shape == (3, 1000)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-4)


def test_imagenet_offline_is_one_sentence_naming_the_flag():
    start = __import__("time").perf_counter()
    with pytest.raises(UserError) as err:
        pretrained.load_application("VGG19", "imagenet", flag="--vgg-weights", **VGG_KWARGS)
    message = str(err.value)
    assert "--vgg-weights PATH" in message
    assert "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "\n" not in message
    assert __import__("time").perf_counter() - start < 30


def test_try_load_reports_why_instead_of_raising(vgg_file):
    model, reason = pretrained.try_load_application("InceptionV3", "imagenet", flag="--inception-weights")
    assert model is None and "--inception-weights PATH" in reason
    model, reason = pretrained.try_load_application("VGG19", vgg_file[1], **VGG_KWARGS)
    assert model is not None and same_weights(model, vgg_file[0]) and "VGG19" in reason


def test_imagenet_comes_from_the_keras_cache_in_the_legacy_h5_format(vgg_file, tmp_path, monkeypatch):
    """The real ImageNet files are legacy (topological) .h5 files found in $KERAS_HOME/models."""
    from keras.src.legacy.saving import legacy_h5_format

    original, _ = vgg_file
    fname, _ = pretrained.imagenet_weights_file("VGG19", include_top=False)
    cached = tmp_path / "keras_home" / "models" / fname
    cached.parent.mkdir(parents=True)
    with h5py.File(cached, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, original)
    md5 = hashlib.md5(cached.read_bytes()).hexdigest()
    builder, folder, side, files = pretrained._APPLICATIONS["VGG19"]
    monkeypatch.setitem(pretrained._APPLICATIONS, "VGG19", (builder, folder, side, {**files, False: (fname, md5)}))
    assert same_weights(pretrained.load_application("VGG19", "imagenet", **VGG_KWARGS), original)


def test_cached_copy_with_wrong_checksum_is_reported(tmp_path):
    fname, _ = pretrained.imagenet_weights_file("VGG19", include_top=False)
    cached = tmp_path / "keras_home" / "models" / fname
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated download")
    with pytest.raises(UserError, match="checksum.*--vgg-weights PATH"):
        pretrained.load_application("VGG19", "imagenet", flag="--vgg-weights", **VGG_KWARGS)


def test_corrupt_file_is_a_user_error(tmp_path):
    path = tmp_path / "broken.weights.h5"
    path.write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(UserError, match="--vgg-weights PATH") as err:
        pretrained.load_application("VGG19", path, flag="--vgg-weights", **VGG_KWARGS)
    assert "\n" not in str(err.value)


def test_weights_of_another_architecture_are_a_user_error(inception_file):
    with pytest.raises(UserError, match="could not be loaded into VGG19"):
        pretrained.load_application("VGG19", inception_file[1], flag="--vgg-weights", **VGG_KWARGS)


def test_missing_file_and_wrong_extension_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--vgg-weights .*no such file"):
        pretrained.load_application("VGG19", tmp_path / "nope.weights.h5", flag="--vgg-weights", **VGG_KWARGS)
    other = tmp_path / "weights.npz"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match=r"\.weights\.h5 or \.h5"):
        pretrained.load_application("VGG19", other, flag="--vgg-weights", **VGG_KWARGS)
    with pytest.raises(UserError, match="unknown pretrained network"):
        pretrained.load_application("ResNet9000", None)
