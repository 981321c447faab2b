"""Fast, exact tiled inference of the SRGAN generator: any image size in bounded memory, no seams.

Two ideas make `--stage upscale` of a 1024x1024 photo several times faster than running the Keras model on
small overlapping tiles:

1. Every tile carries a margin as wide as the network's receptive field and only its centre is kept, so each
   output pixel is computed exactly as in one pass over the whole image (no blending, no seams, any tile size).
   The receptive field of the 16-block body is 37 LR pixels, but the upsampling tail's is only 2. So the body
   runs on wide bands of rows (cheap at LR resolution, 64 channels), and the expensive tail on small tiles of
   the body's features that need just a 2-pixel margin.
2. The book's upsampling block, nearest-neighbour UpSampling2D(2) then a 3x3 convolution, is rewritten as one
   2x2 convolution at the *input* resolution with 4x the output channels and a depth-to-space shuffle (a
   "sub-pixel" convolution): each output pixel of the 3x3 conv sees only 2x2 distinct input pixels, so the
   four output phases are four 2x2 kernels made by summing the 3x3 kernel's taps. Same result, 4/9 of the
   multiply-adds of the layers that dominate the cost. (The paper's generator, `--arch paper`, is built with
   sub-pixel convolutions already: its tail runs as it is.)
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from chapters.srgan.models import SCALE, PixelShuffle, bicubic_upscale
from common.images import to_uint8

# Rows (and columns) of a 3x3 kernel that land on each of the 2 input rows a 2x2 kernel sees, for output phase
# 0 (even output rows: input rows i-1, i) and phase 1 (odd output rows: input rows i, i+1).
_PHASE_TAPS = {0: ((0,), (1, 2)), 1: ((0, 1), (2,))}
BICUBIC_RADIUS = 2  # LR pixels a bicubic 4x output pixel reads on each side
BODY_BAND_BYTES = 256 * 2 ** 20
LAYERS = ("body_skip", "up0_conv", "up1_conv", "tail_conv")  # what Upscaler reads by name


def subpixel_kernel(kernel: np.ndarray) -> np.ndarray:
    """(3, 3, cin, cout) kernel of "UpSampling2D(2), then 3x3 conv" -> (2, 2, cin, 4 * cout) kernel whose output
    channels, in depth_to_space order (row phase, column phase, channel), are the four output phases."""
    phases = []
    for a in (0, 1):
        for b in (0, 1):
            phase = np.zeros((2, 2) + kernel.shape[2:], kernel.dtype)
            for r, rows in enumerate(_PHASE_TAPS[a]):
                for c, cols in enumerate(_PHASE_TAPS[b]):
                    phase[r, c] = kernel[np.ix_(rows, cols)].sum(axis=(0, 1))
            phases.append(phase)
    return np.concatenate(phases, axis=-1)


def upsample_conv(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """UpSampling2D(2) + Conv2D(3x3, "same") with the subpixel_kernel of its kernel, at x's resolution."""
    channels = kernel.shape[-1] // 4
    phases = []
    for a in (0, 1):  # phase (a, b) of output pixel (2i + a, 2j + b) reads input rows i - 1 + a, i + a (cols alike)
        for b in (0, 1):
            padded = tf.pad(x, [[0, 0], [1 - a, a], [1 - b, b], [0, 0]])
            phase = kernel[..., (2 * a + b) * channels:(2 * a + b + 1) * channels]
            phases.append(tf.nn.conv2d(padded, phase, 1, "VALID"))
    return tf.nn.depth_to_space(tf.concat(phases, axis=-1), 2) + bias


def _radius(layer: keras.layers.Layer) -> int:
    return (layer.kernel_size[0] - 1) // 2 if isinstance(layer, keras.layers.Conv2D) else 0


class Upscaler:
    """The 4x image of an LR image in [-1, 1], band by band, as the generator computes it in one pass.

    generator: a network from models.build_generator (a saved one loads with the same layer names).
    tile: side, in LR pixels, of the tiles the upsampling tail runs on; memory grows with its square
    (about 50 kB per LR pixel of a tile), speed hardly changes above 64.
    """

    def __init__(self, generator: keras.Model, tile: int = 128) -> None:
        self.tile = tile
        names = [layer.name for layer in generator.layers]
        missing = [name for name in LAYERS if name not in names]
        if missing:
            raise ValueError(f"it has no layer {missing[0]!r}")
        body_end = names.index("body_skip") + 1
        self.body_margin = sum(_radius(layer) for layer in generator.layers[:body_end])
        # The tail, in LR pixels: two 3x3 convs (book: at 2x and 4x; paper: at 1x and 2x), the 9x9 tail conv at 4x.
        scale, tail = 1, 0.0
        for layer in generator.layers[body_end:]:
            if isinstance(layer, (keras.layers.UpSampling2D, PixelShuffle)):
                scale *= 2
            tail += _radius(layer) / scale
        self.bicubic = "residual" in names
        self.tail_margin = max(math.ceil(tail), BICUBIC_RADIUS if self.bicubic else 0)
        features = generator.get_layer("body_skip").output
        self.body_model = keras.Model(generator.inputs, features)
        self.body = tf.function(lambda lr: self.body_model(lr, training=False), reduce_retracing=True)
        self.book = "up0_upsample" in names
        if self.book:  # rewritten as sub-pixel convolutions (2. above)
            ups = [generator.get_layer(f"up{i}_conv") for i in range(2)]
            self.up_kernels = [tf.constant(subpixel_kernel(np.asarray(up.kernel, np.float32))) for up in ups]
            self.up_biases = [tf.constant(np.asarray(up.bias, np.float32)) for up in ups]
            self.tail_conv = generator.get_layer("tail_conv")
            self.tail = tf.function(self._tail, reduce_retracing=True)
        else:  # already sub-pixel: the generator's own tail, from the body's features (and the LR image)
            self.tail_model = keras.Model([generator.inputs[0], features], generator.outputs[0])
            self.tail = tf.function(lambda features, lr: self.tail_model([lr, features], training=False),
                                    reduce_retracing=True)

    def _tail(self, features: tf.Tensor, lr: tf.Tensor) -> tf.Tensor:
        x = tf.cast(features, tf.float32)
        for kernel, bias in zip(self.up_kernels, self.up_biases):
            x = tf.nn.relu(upsample_conv(x, kernel, bias))
        x = tf.tanh(tf.cast(self.tail_conv(x), tf.float32))
        return tf.clip_by_value(bicubic_upscale(lr) + x, -1.0, 1.0) if self.bicubic else x

    def flops(self, height: int, width: int) -> float:
        """Multiply-adds x 2 this class spends on an LR image of height x width (tile margins not counted)."""
        from common.flops import forward_flops

        if not self.book:
            return forward_flops(self.body_model, 1, (height, width, 3)) + self._paper_tail_flops(height, width)
        total = forward_flops(self.body_model, 1, (height, width, 3))
        for level, kernel in enumerate(self.up_kernels):  # a 2x2 conv at the level's input size
            side = 2 ** level
            total += 2 * (side * height + 1) * (side * width + 1) * int(np.prod(kernel.shape))
        k = self.tail_conv.kernel.shape
        return total + 2 * (SCALE * height) * (SCALE * width) * int(np.prod(k))

    def _paper_tail_flops(self, height: int, width: int) -> float:
        total = 0.0
        for level in range(2):  # a 3x3 conv 64 -> 256 at the level's input size
            kernel = self.tail_model.get_layer(f"up{level}_conv").kernel.shape
            total += 2 * (2 ** level * height) * (2 ** level * width) * int(np.prod(kernel))
        k = self.tail_model.get_layer("tail_conv").kernel.shape
        return total + 2 * (SCALE * height) * (SCALE * width) * int(np.prod(k))

    def band_rows(self, width: int) -> int:
        """LR rows of one body band: a multiple of the tile, as many as BODY_BAND_BYTES allow."""
        fit = BODY_BAND_BYTES // (4 * 64 * (width + 2 * self.body_margin)) - 2 * (self.body_margin + self.tail_margin)
        return max(self.tile, fit // self.tile * self.tile)

    def tiles(self, height: int, width: int) -> int:
        """How many tail tiles an LR image of height x width takes (the unit of progress)."""
        return math.ceil(height / self.tile) * math.ceil(width / self.tile)

    def bands(self, lr: np.ndarray, on_tile: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
        """Yields the 4x image of `lr` ((H, W, 3) float32 in [-1, 1]) as consecutive uint8 bands of rows."""
        height, width = lr.shape[:2]
        rows, tile, body_m, tail_m = self.band_rows(width), self.tile, self.body_margin, self.tail_margin
        for y0 in range(0, height, rows):
            y1 = min(y0 + rows, height)
            # features of LR rows [f0, f1): the band with the tail's margin, computed exactly (body's margin)
            f0, f1 = max(0, y0 - tail_m), min(height, y1 + tail_m)
            b0, b1 = max(0, f0 - body_m), min(height, f1 + body_m)
            features = self.body(tf.constant(lr[None, b0:b1]))[:, f0 - b0:f1 - b0]
            band = np.empty(((y1 - y0) * SCALE, width * SCALE, 3), np.uint8)
            for ty in range(y0, y1, tile):
                ty1 = min(ty + tile, y1)
                t0, t1 = max(f0, ty - tail_m), min(f1, ty1 + tail_m)
                for tx in range(0, width, tile):
                    tx1 = min(tx + tile, width)
                    s0, s1 = max(0, tx - tail_m), min(width, tx1 + tail_m)
                    sr = self.tail(features[:, t0 - f0:t1 - f0, s0:s1], tf.constant(lr[None, t0:t1, s0:s1]))
                    keep = sr[0, (ty - t0) * SCALE:(ty1 - t0) * SCALE, (tx - s0) * SCALE:(tx1 - s0) * SCALE]
                    band[(ty - y0) * SCALE:(ty1 - y0) * SCALE, tx * SCALE:tx1 * SCALE] = to_uint8(keep.numpy())
                    if on_tile is not None:
                        on_tile()
            yield band

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        """The whole 4x image as one uint8 array (small images: evaluation, samples, tests)."""
        return np.concatenate(list(self.bands(lr)), axis=0)
