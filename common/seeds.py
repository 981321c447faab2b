"""Every random stream of the cookbook under one name, so that two draws never share a seed by accident.

Training draws are stateless and keyed by a step key, the int64 pair (run seed, step): the same run seed and
step give the same draw, so `--resume` repeats exactly what the unbroken run would have drawn. A draw of a
step that must not repeat the step's latent draw moves the key's second component by one of the stream
offsets below; no run reaches 2**40 steps, so the streams never meet.

Run-level choices (which faces an evaluation uses, the order of a phase's images) are seeded by the run seed
plus a named offset, so that each is a function of the run seed and none repeats another.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf

# --- streams of a step key's second component ----------------------------------------------------------------
LATENT = 0
CONDITION_LABELS = 1 << 40      # a conditional GAN's sampled classes (common.gan.ConditionalGAN)
G_LATENT = 1 << 40              # PGAN's latent of the G update (its D update draws at LATENT)
STABILIZER_UNIFORMS = 1 << 41   # common.gan.stabilizer_draws: label noise and the gradient-penalty mix
PENALTY_MIX = 2 << 40           # PGAN's gradient-penalty interpolation weights (= STABILIZER_UNIFORMS: PGAN's
                                # step draws nothing from common.gan)
INSTANCE_NOISE = 3 << 40        # the 3D-GAN's instance noise on D's inputs (chapters/gan_3d/models.VoxelGAN)
AVERAGE_STATISTICS = 4 << 40    # the fixed latents (key (0, this + i)) on which a G average recomputes its
                                # BatchNormalization statistics (common.ema, common.gan.GAN.statistics_inputs)
ENCODER_STEPS = 1_000_000       # Age-cGAN's encoder stage: step i is keyed (seed, ENCODER_STEPS + i), away from
                                # the GAN stage's keys of the same run seed
ENCODER_LABELS_SHIFT = 1        # the encoder's class draw: its latent key plus one in both components

# --- run-level offsets of the run seed -------------------------------------------------------------------------
OPTIMIZE_FACES = 3              # Age-cGAN: the real faces the optimize stage fine-tunes the encoder on
HELD_OUT_WIKI = 7               # Age-cGAN on IMDB-WIKI: the faces its evaluation holds out
EVAL_LATENTS = 11               # Age-cGAN: the latents of the generated faces its evaluation scores
HELD_OUT_IDENTITIES = 10_000    # Age-cGAN's embedded faces: procedural people the GAN never saw in training
SIX_AGES_IDENTITIES = 20_000    # Age-cGAN's embedded faces: the people drawn at six ages for the identity ratio
PHASES_PER_SEED = 1000          # PGAN: phase i of a run (its image order and step keys, its layers' initial
                                # weights) is seeded seed * 1000 + i


def stream(key: tf.Tensor, offset: int) -> tf.Tensor:
    """The step key of another stream of the same step: (seed, step) -> (seed, step + offset)."""
    import tensorflow as tf  # here, so that the names above load without TensorFlow (a fast --help)

    return key + tf.constant([0, offset], key.dtype)


def phase_seed(seed: int, phase: int) -> int:
    """PGAN's seed for phase (or layer) `phase` of a run with seed `seed`."""
    return seed * PHASES_PER_SEED + phase
