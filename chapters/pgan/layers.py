"""The Progressive GAN's layers (Karras et al. 2018, section 4), all serialisable (safe_mode=True loads them).

EqualizedDense / EqualizedConv2D  equalised learning rate: weights drawn from N(0, 1) and multiplied at run
                                  time by He's constant gain / sqrt(fan_in), so Adam's per-weight step size is
                                  the same for every layer (section 4.1)
PixelNorm                         pixel-wise feature vector normalisation in the generator (section 4.2)
MinibatchStdDev                   the standard deviation of each feature over a group of images, averaged to
                                  one number per group and appended as one extra feature map (section 3)
Fade                              (1 - alpha) * low-resolution path + alpha * new block; alpha is a
                                  non-trainable weight the training loop sets (section 3, figure 2)
"""
from __future__ import annotations

import math

import keras
from keras import ops

PACKAGE = "pgan"


@keras.saving.register_keras_serializable(package=PACKAGE)
class EqualizedDense(keras.layers.Layer):
    """A dense layer whose N(0, 1) weights are scaled by gain / sqrt(fan_in) in every call."""

    def __init__(self, units: int, gain: float = math.sqrt(2.0), use_bias: bool = True, seed: int | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.units, self.gain, self.use_bias, self.seed = int(units), float(gain), bool(use_bias), seed

    def build(self, input_shape) -> None:
        fan_in = int(input_shape[-1])
        self.scale = self.gain / math.sqrt(fan_in)  # recomputed from the config on load: never stale
        self.kernel = self.add_weight(name="kernel", shape=(fan_in, self.units),
                                      initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=self.seed))
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None

    def call(self, x):
        y = ops.matmul(x, self.kernel * ops.cast(self.scale, self.kernel.dtype))
        return y + self.bias if self.use_bias else y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "gain": self.gain, "use_bias": self.use_bias,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class EqualizedConv2D(keras.layers.Layer):
    """A stride-1 'same' convolution with N(0, 1) weights scaled by gain / sqrt(kernel * kernel * channels_in)."""

    def __init__(self, filters: int, kernel_size: int = 3, gain: float = math.sqrt(2.0), use_bias: bool = True,
                 seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.gain, self.use_bias = float(gain), bool(use_bias)

    def build(self, input_shape) -> None:
        channels = int(input_shape[-1])
        self.scale = self.gain / math.sqrt(self.kernel_size * self.kernel_size * channels)
        self.kernel = self.add_weight(name="kernel", shape=(self.kernel_size, self.kernel_size, channels, self.filters),
                                      initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=self.seed))
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    def call(self, x):
        y = ops.conv(x, self.kernel * ops.cast(self.scale, self.kernel.dtype), strides=1, padding="same")
        return y + self.bias if self.use_bias else y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size, "gain": self.gain,
                "use_bias": self.use_bias, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelNorm(keras.layers.Layer):
    """b = a / sqrt(mean over channels of a^2 + epsilon), at every pixel (or for a flat vector)."""

    def __init__(self, epsilon: float = 1e-8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x):
        # the mean of squares in float32: bfloat16's 8-bit mantissa would round its sum over the channels
        squares = ops.square(ops.cast(x, "float32"))
        return x * ops.cast(ops.rsqrt(ops.mean(squares, axis=-1, keepdims=True) + self.epsilon), x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MinibatchStdDev(keras.layers.Layer):
    """Appends one feature map: the stddev of every feature and pixel over a group of `group_size` images,
    averaged into one number per group (the official implementation's grouping). When the batch does not divide
    by the group size the whole batch is one group."""

    def __init__(self, group_size: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.group_size = int(group_size)

    def call(self, x):
        shape = ops.shape(x)
        n, h, w, c = shape[0], shape[1], shape[2], shape[3]
        group = ops.minimum(self.group_size, n)
        group = ops.where(ops.equal(n % group, 0), group, n)
        # image i sits in group i % (n // group), as in the paper's code; the statistics in float32 under bfloat16
        y = ops.reshape(ops.cast(x, "float32"), (group, -1, h, w, c))
        y = y - ops.mean(y, axis=0, keepdims=True)
        y = ops.sqrt(ops.mean(ops.square(y), axis=0) + 1e-8)  # (n // group, h, w, c)
        y = ops.mean(y, axis=(1, 2, 3), keepdims=True)  # one number per group
        y = ops.tile(y, (group, h, w, 1))  # back to (n, h, w, 1)
        return ops.concatenate([x, ops.cast(y, x.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], None if input_shape[-1] is None else input_shape[-1] + 1)

    def get_config(self) -> dict:
        return {**super().get_config(), "group_size": self.group_size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Fade(keras.layers.Layer):
    """[low, new] -> (1 - alpha) * low + alpha * new; alpha is a non-trainable weight saved with the model."""

    def __init__(self, alpha: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.initial_alpha = float(alpha)

    def build(self, input_shape) -> None:
        self.alpha = self.add_weight(name="alpha", shape=(), trainable=False,
                                     initializer=keras.initializers.Constant(self.initial_alpha))

    def call(self, inputs):
        low, new = inputs
        alpha = ops.cast(self.alpha, low.dtype)
        return (1.0 - alpha) * low + alpha * new  # exactly `low` at alpha 0 and `new` at alpha 1

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.initial_alpha}
