"""Serialisable custom layers (each with get_config, none a Lambda) that load with safe_mode=True."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="common")
class MinibatchDiscrimination(keras.layers.Layer):
    """Salimans et al. (2016): lets the discriminator see how alike the samples of a batch are.

    Features f (B, A) are projected by a tensor T to M rows of size C each; for every sample and row,
    o_b = sum over the other samples of exp(-L1 distance). A collapsed generator makes these large, which D
    can then punish. Output: the input features concatenated with o (B, A + M).
    """

    def __init__(self, num_kernels: int = 16, kernel_dim: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_kernels, self.kernel_dim = num_kernels, kernel_dim

    def build(self, input_shape) -> None:
        self.projection = self.add_weight(name="projection", shape=(input_shape[-1], self.num_kernels * self.kernel_dim),
                                          initializer="glorot_uniform")

    def call(self, features):
        rows = ops.reshape(ops.matmul(features, self.projection), (-1, self.num_kernels, self.kernel_dim))
        distances = ops.sum(ops.abs(ops.expand_dims(rows, 0) - ops.expand_dims(rows, 1)), axis=-1)  # (B, B, M)
        closeness = ops.sum(ops.exp(-distances), axis=1) - 1.0  # minus each sample's match with itself
        return ops.concatenate([features, ops.cast(closeness, features.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.num_kernels)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_kernels": self.num_kernels, "kernel_dim": self.kernel_dim}


@keras.saving.register_keras_serializable(package="common")
class InstanceNormalization(keras.layers.Layer):
    """Normalises each sample's channels over its spatial positions (Ulyanov et al. 2016), then scale+shift."""

    def __init__(self, epsilon: float = 1e-5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape) -> None:
        channels = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, x):
        axes = tuple(range(1, len(x.shape) - 1))
        mean = ops.mean(x, axis=axes, keepdims=True)
        variance = ops.var(x, axis=axes, keepdims=True)
        return (x - mean) * ops.rsqrt(variance + self.epsilon) * self.gamma + self.beta

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="common")
class Pack(keras.layers.Layer):
    """PacGAN (Lin et al. 2018): K samples in a row become one input of K times the channels.

    (B, ..., C) -> (B / K, ..., K * C); the discriminator then judges K samples jointly, which makes a
    generator that repeats itself easy to spot.
    """

    def __init__(self, k: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k = k

    def call(self, x):
        shape = ops.shape(x)
        grouped = ops.reshape(x, (-1, self.k, *shape[1:]))
        channels_last = ops.moveaxis(grouped, 1, -2)  # (B/K, ..., K, C)
        return ops.reshape(channels_last, (-1, *shape[1:-1], self.k * shape[-1]))

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k}
