"""The Progressive GAN (Karras et al. 2018): a generator and a discriminator that grow from 4x4 by doubling.

`Growing` owns every layer of both networks, block by block, and assembles the Keras model of any phase from
them (the layers, hence the weights, are shared between the phases):

  level k      resolution 4 * 2**k (level 0 is 4x4)
  "stable"     G: blocks 0..k -> toRGB_k;   D: fromRGB_k -> blocks k..0
  "fade"       G: (1 - a) * upsample(toRGB_{k-1}(blocks 0..k-1)) + a * toRGB_k(block k(...))
               D: blocks k-1..0 of (1 - a) * fromRGB_{k-1}(avgpool(x)) + a * block k(fromRGB_k(x))

Blocks follow table 2 of the paper: G's 4x4 block is z -> PixelNorm -> Dense(4*4*C) -> 3x3 conv, every later
block nearest-upsamples and applies two 3x3 convs; each conv is followed by LeakyReLU(0.2) and PixelNorm. D
mirrors it with 2x2 average pooling and ends in minibatch stddev -> 3x3 conv -> 4x4 dense -> Dense(1). Feature
maps: min(--max-filters, --fmap-base / resolution); the paper's base 16384 gives 512 up to 32x32, then 256, 128,
... 16 at 1024.

Under --precision bfloat16 the blocks compute in bfloat16 while what leaves the networks stays float32: toRGB
(and the fade-in's blend of images) and D's score are float32 layers, because both losses' gradient penalties
differentiate the score with respect to float32 images (WGAN-GP's mixed with the float32 reals, R1's the reals).
"""
from __future__ import annotations

import math

import keras
from keras import layers

from chapters.pgan.layers import EqualizedConv2D, EqualizedDense, Fade, MinibatchStdDev, PixelNorm
from common import seeds

PHASES = ("stable", "fade")


def resolution(level: int) -> int:
    return 4 * 2 ** level


def level_of(res: int) -> int:
    level = int(round(math.log2(res))) - 2
    if level < 0 or resolution(level) != res:
        raise ValueError(f"{res} is not a power of two >= 4")
    return level


FMAP_BASE = 16384  # the paper's feature maps: 512 up to 32x32, then halving with every doubling


def filters_at(res: int, max_filters: int = 512, fmap_base: int = FMAP_BASE) -> int:
    """The paper's feature-map count min(max_filters, fmap_base / resolution)."""
    return max(1, min(max_filters, fmap_base // res))


def optimizer(learning_rate: float = 1e-3) -> keras.optimizers.Optimizer:
    """Adam with the paper's settings (section A.1): lr 0.001, beta_1 0, beta_2 0.99, epsilon 1e-8."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.0, beta_2=0.99, epsilon=1e-8)


class Growing:
    """All layers of G and D up to `max_level`, and the models of each (level, phase)."""

    def __init__(self, latent_dim: int = 512, max_level: int = 4, max_filters: int = 512, channels: int = 3,
                 seed: int = 0, fmap_base: int = FMAP_BASE) -> None:
        self.latent_dim, self.max_level, self.max_filters, self.channels = latent_dim, max_level, max_filters, channels
        self.fmap_base = fmap_base
        self._seed = seeds.phase_seed(seed, 0)
        lrelu = lambda name: layers.LeakyReLU(0.2, name=name)  # noqa: E731
        self.g_blocks, self.g_to_rgb, self.g_fade = [], [], [None]
        self.d_blocks, self.d_from_rgb, self.d_fade = [], [], [None]
        for level in range(max_level + 1):
            res = resolution(level)
            nf, tag = self.nf(res), f"{res}x{res}"
            if level == 0:
                g = [PixelNorm(name="g_latent_norm"),
                     EqualizedDense(16 * nf, gain=math.sqrt(2.0) / 4, name="g_4x4_dense", seed=self._next()),
                     layers.Reshape((4, 4, nf), name="g_4x4_reshape"), lrelu("g_4x4_act0"), PixelNorm(name="g_4x4_norm0"),
                     EqualizedConv2D(nf, 3, name="g_4x4_conv", seed=self._next()), lrelu("g_4x4_act1"),
                     PixelNorm(name="g_4x4_norm1")]
                d = [MinibatchStdDev(4, name="d_4x4_stddev"), EqualizedConv2D(nf, 3, name="d_4x4_conv", seed=self._next()),
                     lrelu("d_4x4_act0"), layers.Flatten(name="d_4x4_flatten"),
                     EqualizedDense(nf, name="d_4x4_dense", seed=self._next()), lrelu("d_4x4_act1"),
                     EqualizedDense(1, gain=1.0, name="d_score", seed=self._next(), dtype="float32")]
            else:
                g = [layers.UpSampling2D(2, interpolation="nearest", name=f"g_{tag}_up")]
                for i in range(2):
                    g += [EqualizedConv2D(nf, 3, name=f"g_{tag}_conv{i}", seed=self._next()), lrelu(f"g_{tag}_act{i}"),
                          PixelNorm(name=f"g_{tag}_norm{i}")]
                d = [EqualizedConv2D(nf, 3, name=f"d_{tag}_conv0", seed=self._next()), lrelu(f"d_{tag}_act0"),
                     EqualizedConv2D(self.nf(res // 2), 3, name=f"d_{tag}_conv1", seed=self._next()),
                     lrelu(f"d_{tag}_act1"), layers.AveragePooling2D(2, name=f"d_{tag}_down")]
                self.g_fade.append(Fade(name=f"g_{tag}_fade", dtype="float32"))
                self.d_fade.append(Fade(name=f"d_{tag}_fade"))
            self.g_blocks.append(g)
            self.d_blocks.append(d)
            self.g_to_rgb.append(EqualizedConv2D(channels, 1, gain=1.0, name=f"g_{tag}_to_rgb", seed=self._next(),
                                                 dtype="float32"))
            self.d_from_rgb.append([EqualizedConv2D(nf, 1, name=f"d_{tag}_from_rgb", seed=self._next()),
                                    lrelu(f"d_{tag}_from_rgb_act")])
        self._models: dict = {}

    def _next(self) -> int:
        self._seed += 1
        return self._seed

    def nf(self, res: int) -> int:
        return filters_at(res, self.max_filters, self.fmap_base)

    # --- assembling the models of a phase -------------------------------------------------------------------

    def generator(self, level: int, phase: str) -> keras.Model:
        return self._model("g", level, phase)

    def discriminator(self, level: int, phase: str) -> keras.Model:
        return self._model("d", level, phase)

    def fade_paths(self, level: int) -> keras.Model:
        """z -> [upsampled low-resolution path, new block's path, their blend] of the generator fading in `level`."""
        return self._model("paths", level, "fade")

    def fade_layers(self, level: int) -> list[Fade]:
        return [self.g_fade[level], self.d_fade[level]] if level else []

    def _model(self, kind: str, level: int, phase: str) -> keras.Model:
        if phase not in PHASES or not 0 <= level <= self.max_level or (level == 0 and phase == "fade"):
            raise ValueError(f"no phase {phase!r} at level {level}")
        key = (kind, level, phase)
        if key not in self._models:
            build = self._build_d if kind == "d" else self._build_g
            self._models[key] = build(level, phase, paths=kind == "paths")
        return self._models[key]

    def _build_g(self, level: int, phase: str, paths: bool = False) -> keras.Model:
        z = keras.Input((self.latent_dim,), name="z")
        x = z
        for block in self.g_blocks[:level]:
            x = _apply(block, x)
        res = resolution(level)
        if phase == "stable":
            out = self.g_to_rgb[level](_apply(self.g_blocks[level], x))
            return keras.Model(z, out, name="generator")
        low = layers.UpSampling2D(2, interpolation="nearest", name=f"g_{res}x{res}_low_up",
                                  dtype="float32")(self.g_to_rgb[level - 1](x))
        new = self.g_to_rgb[level](_apply(self.g_blocks[level], x))
        out = self.g_fade[level]([low, new])
        return keras.Model(z, [low, new, out] if paths else out, name="generator_paths" if paths else "generator")

    def _build_d(self, level: int, phase: str, paths: bool = False) -> keras.Model:
        res = resolution(level)
        image = keras.Input((res, res, self.channels), name="image")
        x = _apply(self.d_blocks[level], _apply(self.d_from_rgb[level], image))
        if phase == "fade":
            low = layers.AveragePooling2D(2, name=f"d_{res}x{res}_low_down")(image)
            x = self.d_fade[level]([_apply(self.d_from_rgb[level - 1], low), x])
        for block in reversed(self.d_blocks[:level]):
            x = _apply(block, x)
        return keras.Model(image, x, name="discriminator")

    # --- what a checkpoint holds ----------------------------------------------------------------------------

    def layers_up_to(self, level: int) -> dict[str, dict]:
        """The weighted layers of levels 0..level by name (later levels are untrained and not checkpointed).

        Builds the stable models of every level up to `level` first, so every layer has its weights."""
        for k in range(level + 1):
            self.generator(k, "stable"), self.discriminator(k, "stable")
        g, d = {}, {}
        for k in range(level + 1):
            g.update({l.name: l for l in [*self.g_blocks[k], self.g_to_rgb[k]] if l.weights})
            d.update({l.name: l for l in [*self.d_blocks[k], *self.d_from_rgb[k]] if l.weights})
        return {"generator_layers": g, "discriminator_layers": d}


def _apply(block, x):
    for layer in block:
        x = layer(x)
    return x


# --- what a training step holds in memory (estimated before anything is built) --------------------------------

def feature_maps(level: int, max_filters: int, latent_dim: int, channels: int = 3,
                 fmap_base: int = FMAP_BASE) -> tuple[list, list]:
    """Per-sample shapes of every layer output of G and D in the fade-in to `level` (the larger of its two
    phases: both resolutions' paths run), as `Growing` builds them."""
    nf = [filters_at(resolution(k), max_filters, fmap_base) for k in range(level + 1)]
    g = [(latent_dim,), (latent_dim,), (16 * nf[0],)] + [(4, 4, nf[0])] * 5  # norm, dense, act/norm, conv/act/norm
    d = [(4, 4, nf[0] + 1)] + [(4, 4, nf[0])] * 2 + [(nf[0],)] * 2 + [(1,)]  # stddev, conv/act, dense/act, score
    for k in range(1, level + 1):
        r = resolution(k)
        g += [(r, r, nf[k - 1])] + [(r, r, nf[k])] * 6  # upsample, 2 x (conv, act, norm)
        d += [(r, r, nf[k])] * 2 + [(r, r, nf[k - 1])] * 2 + [(r // 2, r // 2, nf[k - 1])]  # conv/act x 2, pool
    r = resolution(level)
    g += [(r, r, channels)]  # toRGB
    d += [(r, r, channels), (r, r, nf[level]), (r, r, nf[level])]  # the image, fromRGB and its activation
    if level:
        g += [(r // 2, r // 2, channels), (r, r, channels), (r, r, channels)]  # old toRGB, upsampled, blend
        d += [(r // 2, r // 2, channels)] + [(r // 2, r // 2, nf[level - 1])] * 3  # pool, old fromRGB/act, blend
    return g, d


def parameter_count(level: int, max_filters: int, latent_dim: int, channels: int = 3,
                    fmap_base: int = FMAP_BASE) -> tuple[int, int]:
    """Weights of G and D up to `level` (every block, toRGB and fromRGB), without building them."""
    nf = [filters_at(resolution(k), max_filters, fmap_base) for k in range(level + 1)]
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731
    g = latent_dim * 16 * nf[0] + 16 * nf[0] + conv(3, nf[0], nf[0])
    d = conv(3, nf[0] + 1, nf[0]) + (16 * nf[0] * nf[0] + nf[0]) + (nf[0] + 1)
    for k in range(level + 1):
        if k:
            g += conv(3, nf[k - 1], nf[k]) + conv(3, nf[k], nf[k])
            d += conv(3, nf[k], nf[k]) + conv(3, nf[k], nf[k - 1])
        g += conv(1, nf[k], channels)
        d += conv(1, channels, nf[k])
    return g, d
