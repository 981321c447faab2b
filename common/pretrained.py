"""Load keras.applications networks with their real weights, or fail with one clear sentence.

A perceptual loss or an Inception score computed with a randomly initialised network looks like a
number but means nothing, so nothing here ever falls back to random weights silently: the caller
either gets the network it asked for or a UserError naming the flag that supplies the weights file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import keras

from common.errors import UserError

# Where keras.applications downloads ImageNet weights from; a module constant so tests can point it
# at an unreachable address and exercise the offline path deterministically.
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

# name -> (constructor, URL folder, default input side, {include_top: (file name, md5)});
# file names and hashes are those keras.applications itself uses.
_APPLICATIONS = {
    "VGG19": (
        keras.applications.VGG19,
        "vgg19/",
        224,
        {
            True: ("vgg19_weights_tf_dim_ordering_tf_kernels.h5", "cbe5617147190e668d6c5d5026f83318"),
            False: ("vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "253f8cb515780f3b799900260a226db6"),
        },
    ),
    "InceptionV3": (
        keras.applications.InceptionV3,
        "inception_v3/",
        299,
        {
            True: ("inception_v3_weights_tf_dim_ordering_tf_kernels.h5", "9a0d58056eeedaa3f26cb7ebd46da564"),
            False: ("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "bcbd6486424b2319ff4ef7d526e38f63"),
        },
    ),
    "InceptionResNetV2": (
        keras.applications.InceptionResNetV2,
        "inception_resnet_v2/",
        299,
        {
            True: ("inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5", "e693bd0210a403b3192acc6073ad2e96"),
            False: (
                "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "d19885ff4a710c122648d3b5c3b684e4",
            ),
        },
    ),
}


def imagenet_weights_file(name: str, include_top: bool = True) -> tuple[str, str]:
    """(file name, download URL) of the ImageNet weights keras.applications uses for `name`."""
    _, folder, _, files = _APPLICATIONS[_check_name(name)]
    fname = files[include_top][0]
    return fname, WEIGHTS_URL + folder + fname


def keras_cache_dir() -> Path:
    """The Keras cache root (KERAS_HOME or ~/.keras); ImageNet weights live in its models/ folder."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def load_application(
    name: str, weights: str | os.PathLike | None = "imagenet", *, flag: str = "--weights", **kwargs
) -> keras.Model:
    """Build keras.applications.<name> with real weights.

    weights: "imagenet" (Keras cache, else download), a path to a .weights.h5 / .h5 file (e.g. the
    ImageNet file copied by hand), or None for an explicitly random network (tests only).
    flag: the command-line flag that supplies a weights file; error messages tell the user to pass it.
    kwargs go to the keras.applications constructor (include_top, input_shape, pooling, ...).
    Raises UserError (one sentence) when the weights cannot be obtained or do not fit the network.
    """
    name = _check_name(name)
    constructor, _, side, _ = _APPLICATIONS[name]
    include_top = kwargs.get("include_top", True)
    if weights is None:
        return constructor(weights=None, **kwargs)
    if include_top:
        # The same preconditions keras.applications enforces for pretrained classifiers.
        if kwargs.get("classes", 1000) != 1000:
            raise ValueError(f"{name} with include_top=True and pretrained weights needs classes=1000")
        shape = kwargs.get("input_shape")
        if shape is not None and tuple(shape[:2]) != (side, side):
            raise ValueError(f"{name} with include_top=True and pretrained weights needs {side}x{side} inputs")
    if str(weights) == "imagenet":
        path = _imagenet_file(name, include_top, flag)
        source = f"the ImageNet weights file {path}"
    else:
        path, source = _user_file(name, weights, flag), f"{flag} {weights}"
    model = constructor(weights=None, **kwargs)
    try:
        # Keras warns per skipped sub-container before raising; the UserError says it in one line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.load_weights(str(path))
    except Exception as err:  # h5py/Keras raise OSError, ValueError, KeyError, ... for bad files
        # Keras' messages run over many lines; their first sentence says what went wrong.
        reason = str(err).strip().split("\n")[0].split(". ")[0].rstrip(".:")[:200] or type(err).__name__
        raise UserError(
            f"{source} could not be loaded into {name} (include_top={include_top}): {reason}; "
            f"pass {flag} PATH with the matching {imagenet_weights_file(name, include_top)[0]}"
        ) from None
    return model


def try_load_application(
    name: str, weights: str | os.PathLike | None = "imagenet", *, flag: str = "--weights", **kwargs
) -> tuple[keras.Model | None, str]:
    """load_application for "auto" fallbacks: (model, what was loaded) or (None, why not)."""
    try:
        model = load_application(name, weights, flag=flag, **kwargs)
    except UserError as err:
        return None, str(err)
    source = "random weights" if weights is None else f"weights {weights}"
    return model, f"{name} with {source}"


def _check_name(name: str) -> str:
    if name not in _APPLICATIONS:
        raise UserError(f"unknown pretrained network {name!r}; expected one of {', '.join(_APPLICATIONS)}")
    return name


def _imagenet_file(name: str, include_top: bool, flag: str) -> Path:
    fname, url = imagenet_weights_file(name, include_top)
    md5 = _APPLICATIONS[name][3][include_top][1]
    cache = keras_cache_dir()
    cached = cache / "models" / fname
    was_cached = cached.exists()  # get_file deletes a bad copy when the re-download fails
    try:
        return Path(keras.utils.get_file(fname, url, cache_subdir="models", file_hash=md5, cache_dir=str(cache)))
    except Exception:  # urllib/ssl/hash errors all mean the same thing to the user
        where = (
            f"the copy {cached} fails its checksum and could not be downloaded again"
            if was_cached
            else f"no network and not in the Keras cache {cache / 'models'}"
        )
        raise UserError(
            f"could not load ImageNet weights for {name} ({where}); download {fname} from {url} "
            f"on a machine with internet and pass {flag} PATH"
        ) from None


def _user_file(name: str, weights: str | os.PathLike, flag: str) -> Path:
    path = Path(weights).expanduser()
    fname = imagenet_weights_file(name, False)[0]
    if not path.is_file():
        raise UserError(f"{flag} {weights}: no such file; expected a {name} weights file such as {fname}")
    if path.suffix.lower() not in (".h5", ".hdf5"):
        raise UserError(f"{flag} {weights}: expected a .weights.h5 or .h5 file with {name} weights, got {path.name}")
    return path
