"""Pretrained face networks from face-api (MIT, see weights/LICENSE-face-api.txt), rebuilt in Keras 3.

- `face_recognition_model`: dlib's ResNet-34-style face descriptor (150x150 in, 128-d out; two faces are the
  same person when the Euclidean distance is < 0.6 on tight, dlib-style face crops).
- `age_model`: face-api's Tiny-Xception age (years) and gender net (112x112 in).

Both take project images (float32 in [-1, 1], NHWC RGB, any square size) by default and resize inside the
graph, so they can score generator output and pass gradients back to it. `input_range="pixels"` takes
0..255 pixels instead; with `input_size` 150 / 112 that is exactly the original's input, which is how
tests/test_face_nets.py checks the conversion against outputs of the original TF.js model.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from common.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FACE_RECOGNITION_WEIGHTS = WEIGHTS_DIR / "face_recognition.npz"
AGE_GENDER_WEIGHTS = WEIGHTS_DIR / "age_gender.npz"
MEAN_RGB = (122.782, 117.001, 104.298)  # face-api's normalisation for both nets
FR_SIZE, AGE_SIZE = 150, 112

register = keras.saving.register_keras_serializable(package="age_cgan")


def _resize_axis(x, axis: int, out_size: int):
    """One axis of TF1's bilinear resize (align_corners=False, half_pixel_centers=False), as face-api uses."""
    in_size = ops.shape(x)[axis]
    # Exact r*in/out keeps floor() exact at integer source positions, as the original's float64 maths does.
    src = ops.arange(out_size, dtype="float32") * ops.cast(in_size, "float32") / float(out_size)
    lo = ops.floor(src)
    hi = ops.minimum(ops.ceil(src), ops.cast(in_size - 1, "float32"))
    shape = [1, 1, 1, 1]
    shape[axis] = out_size
    frac = ops.reshape(src - lo, shape)
    a = ops.take(x, ops.cast(lo, "int32"), axis=axis)
    b = ops.take(x, ops.cast(hi, "int32"), axis=axis)
    return a + (b - a) * frac


@register
class FacePreprocess(layers.Layer):
    """Project image ([-1, 1]) or 0..255 pixels -> face-api's network input: resize, minus mean RGB, /255."""

    def __init__(self, size: int, input_range: str = "tanh", mean_rgb=MEAN_RGB, **kwargs):
        super().__init__(**kwargs)
        if input_range not in ("tanh", "pixels"):
            raise UserError(f"input_range must be 'tanh' ([-1, 1]) or 'pixels' (0..255), got {input_range!r}.")
        self.size, self.input_range, self.mean_rgb = int(size), input_range, tuple(float(m) for m in mean_rgb)

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if h is not None and w is not None and h != w:
            raise UserError(f"Face networks expect square face crops, got {h}x{w}.")

    def call(self, x):
        x = ops.cast(x, "float32")
        if self.input_range == "tanh":
            x = (x + 1.0) * 127.5
        if x.shape[1] != self.size:  # the original skips the resize at its native size; so do we
            x = _resize_axis(_resize_axis(x, 2, self.size), 1, self.size)  # columns first, as the original
        return (x - ops.convert_to_tensor(self.mean_rgb, "float32")) / 255.0

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "size": self.size, "input_range": self.input_range,
                "mean_rgb": list(self.mean_rgb)}


@register
class ChannelScale(layers.Layer):
    """dlib's affine "scale" layer (a frozen batch norm): x * weights + biases per channel."""

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="weights")
        self.beta = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="biases")

    def call(self, x):
        return x * self.gamma + self.beta


@register
class PadChannels(layers.Layer):
    """Appends `extra` all-zero channels: dlib's parameter-free shortcut when a block doubles its width."""

    def __init__(self, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = int(extra)

    def call(self, x):
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra]])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], input_shape[3] + self.extra)

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}


def load_face_api_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Read an archive written by tools/convert_face_api.py: {tfjs name with '.' for '/': float32 array}.

    Quantised tensors are de-quantised as tfjs does (q * scale + min in float64, then float32), bit for bit.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Expected face-api weights at {path}, but there is no such file.")
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"Expected an .npz archive of face-api weights at {path}, but it cannot be read: {err}")
    out = {k: v.astype(np.float32) for k, v in raw.items() if not k.startswith("__") and not k.endswith(
        (".q", ".qscale", ".qmin"))}
    for key in (k[:-2] for k in raw if k.endswith(".q")):
        if key + ".qscale" in raw and key + ".qmin" in raw:  # else reported as a missing tensor by _assign
            q, scale, lo = raw[key + ".q"], raw[key + ".qscale"], raw[key + ".qmin"]
            out[key] = (q.astype(np.float64) * float(scale) + float(lo)).astype(np.float32)
    return out


def _assign(model: keras.Model, params: dict[str, list[str]], path: str | Path) -> keras.Model:
    """Set every layer named in `params` from the archive, with shape checks and one-sentence errors."""
    tensors = load_face_api_weights(path)
    for layer_name, names in params.items():
        layer = model.get_layer(layer_name)
        assert len(layer.weights) == len(names), (layer_name, names)  # a builder bug, not a user error
        values = []
        for name, var in zip(names, layer.weights):
            if name not in tensors:
                raise UserError(f"Weights file {path} has no tensor {name!r}; expected the archive written by "
                                f"tools/convert_face_api.py for {model.name}.")
            if tuple(tensors[name].shape) != tuple(var.shape):
                raise UserError(f"Tensor {name!r} in {path} has shape {tensors[name].shape}, expected {var.shape}.")
            values.append(tensors[name])
        layer.set_weights(values)
    return model


def _face_input(size: int, input_size: int | None, input_range: str):
    inputs = keras.Input((input_size, input_size, 3), name="image")
    return inputs, FacePreprocess(size, input_range, name="preprocess")(inputs)


def face_recognition_model(weights_path: str | Path | None = FACE_RECOGNITION_WEIGHTS,
                           input_size: int | None = None, input_range: str = "tanh") -> keras.Model:
    """Face descriptor net: (batch, s, s, 3) images -> (batch, 128) descriptors (not unit length).

    `weights_path=None` leaves random weights (for tests of the structure only).
    """
    params: dict[str, list[str]] = {}

    def conv(x, name: str, filters: int, kernel: int, strides: int = 1, relu: bool = True):
        x = layers.Conv2D(filters, kernel, strides, "valid" if strides == 2 else "same", name=f"{name}.conv")(x)
        x = ChannelScale(name=f"{name}.scale")(x)
        params[f"{name}.conv"] = [f"{name}.conv.filters", f"{name}.conv.bias"]
        params[f"{name}.scale"] = [f"{name}.scale.weights", f"{name}.scale.biases"]
        return layers.ReLU()(x) if relu else x

    def residual(x, name: str, filters: int, down: bool = False):
        out = conv(conv(x, f"{name}.conv1", filters, 3, 2 if down else 1), f"{name}.conv2", filters, 3, relu=False)
        if down:
            x = layers.AveragePooling2D(2, 2, "valid")(x)
            if x.shape[-1] < filters:
                x = PadChannels(filters - x.shape[-1])(x)
            if out.shape[1] < x.shape[1]:  # odd sizes: the VALID conv loses a pixel the pool keeps
                out = layers.ZeroPadding2D(((0, 1), (0, 1)))(out)
        return layers.ReLU()(layers.Add()([out, x]))

    inputs, x = _face_input(FR_SIZE, input_size, input_range)
    x = conv(x, "conv32_down", 32, 7, strides=2)
    x = layers.MaxPooling2D(3, 2, "valid")(x)
    for name, filters, down in [("conv32_1", 32, 0), ("conv32_2", 32, 0), ("conv32_3", 32, 0),
                                ("conv64_down", 64, 1), ("conv64_1", 64, 0), ("conv64_2", 64, 0),
                                ("conv64_3", 64, 0), ("conv128_down", 128, 1), ("conv128_1", 128, 0),
                                ("conv128_2", 128, 0), ("conv256_down", 256, 1), ("conv256_1", 256, 0),
                                ("conv256_2", 256, 0), ("conv256_down_out", 256, 1)]:
        x = residual(x, name, filters, bool(down))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(128, use_bias=False, name="fc")(x)
    params["fc"] = ["fc"]
    model = keras.Model(inputs, outputs, name="face_recognition")
    return _assign(model, params, weights_path) if weights_path is not None else model


def age_model(weights_path: str | Path | None = AGE_GENDER_WEIGHTS,
              input_size: int | None = None, input_range: str = "tanh") -> keras.Model:
    """Age/gender net: images -> {"age": (batch, 1) years, "gender": (batch, 2) softmax [male, female]}."""
    params: dict[str, list[str]] = {}

    def sep(x, name: str, filters: int):
        params[name] = [f"{name}.depthwise_filter", f"{name}.pointwise_filter", f"{name}.bias"]
        return layers.SeparableConv2D(filters, 3, padding="same", name=name)(x)

    def reduction(x, name: str, filters: int, activate_input: bool = True):
        out = layers.ReLU()(x) if activate_input else x
        out = sep(layers.ReLU()(sep(out, f"{name}.separable_conv0", filters)), f"{name}.separable_conv1", filters)
        out = layers.MaxPooling2D(3, 2, "same")(out)
        params[f"{name}.expansion_conv"] = [f"{name}.expansion_conv.filters", f"{name}.expansion_conv.bias"]
        return layers.Add()([out, layers.Conv2D(filters, 1, 2, "same", name=f"{name}.expansion_conv")(x)])

    def main_block(x, name: str):
        out = x
        for i in range(3):
            out = sep(layers.ReLU()(out), f"{name}.separable_conv{i}", 128)
        return layers.Add()([out, x])

    inputs, x = _face_input(AGE_SIZE, input_size, input_range)
    x = layers.Conv2D(32, 3, 2, "same", name="entry_flow.conv_in")(x)
    params["entry_flow.conv_in"] = ["entry_flow.conv_in.filters", "entry_flow.conv_in.bias"]
    x = reduction(layers.ReLU()(x), "entry_flow.reduction_block_0", 64, activate_input=False)
    x = reduction(x, "entry_flow.reduction_block_1", 128)
    x = main_block(main_block(x, "middle_flow.main_block_0"), "middle_flow.main_block_1")
    x = reduction(x, "exit_flow.reduction_block", 256)
    x = layers.ReLU()(sep(x, "exit_flow.separable_conv", 512))
    x = layers.Flatten()(layers.AveragePooling2D(7, 2, "valid")(x))
    age = layers.Dense(1, name="fc.age")(x)
    gender = layers.Softmax()(layers.Dense(2, name="fc.gender")(x))
    params.update({f"fc.{k}": [f"fc.{k}.weights", f"fc.{k}.bias"] for k in ("age", "gender")})
    model = keras.Model(inputs, {"age": age, "gender": gender}, name="age_gender")
    return _assign(model, params, weights_path) if weights_path is not None else model
