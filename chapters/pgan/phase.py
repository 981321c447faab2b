"""One growth phase of the progressive GAN as a keras.Model that common.train.fit_gan trains: the paper's WGAN-GP
step (Gulrajani et al. 2017, with its drift term) or the non-saturating logistic loss with an R1 penalty on the
reals (Mescheder et al. 2018), which StyleGAN (Karras et al. 2019) trained on the same progressive growth."""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from chapters.pgan.schedule import LOSSES
from common import seeds
from common.gan import report


class GrowthPhase(keras.Model):
    """Per step one D update, then one G update on fresh latents z'. With `loss` "wgan-gp" (the paper's):
    D on -(D(x) - D(G(z))) + gp_weight * (|grad D(x^)| - 1)^2 + drift * D(x)^2 at points x^ between reals and
    fakes, G on -D(G(z')). With "logistic": D on softplus(D(G(z))) + softplus(-D(x)) + r1_gamma / 2 * |grad D(x)|^2,
    G on softplus(-D(G(z'))). R1 differentiates D at the reals it scores anyway, so the D update runs D on two
    batches instead of three (its cost falls by about a quarter: the second-order pass remains).

    During a fade-in the real images are blended like the generator's output (the paper's official code):
    (1 - alpha) * upsample(downsample(x)) + alpha * x, so D sees the same mix of resolutions for reals and fakes;
    `alpha` is a variable the growth's callback sets before every step (outside the replicas). Under a
    tf.distribute strategy each replica runs the step on its slice of the batch (the minibatch standard deviation
    over its slice, as in the paper's multi-GPU code) and the gradients of loss / replicas are summed.

    `items` are what the phase's checkpoints hold (the layers of every level so far, its Adams, the growth's
    progress, Gs); `sampler` is the phase's model of Gs, what the grids show and models/generator.keras holds.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, sampler: keras.Model,
                 g_optimizer: keras.optimizers.Optimizer, d_optimizer: keras.optimizers.Optimizer,
                 items: dict[str, Any], fading: bool, alpha: tf.Variable, *, loss: str = "logistic",
                 r1_gamma: float = 1.0, gp_weight: float = 10.0, drift: float = 0.001, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.generator, self.discriminator, self.sampler = generator, discriminator, sampler
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        # kept out of Keras' attribute tracking, which would wrap the nested dicts: tf.train.Checkpoint takes them as
        # they are
        object.__setattr__(self, "items", items)
        self.fading, self.alpha = fading, alpha
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}: one of {', '.join(LOSSES)}")
        self.loss_kind = loss  # not `loss`: keras.Model has its own
        self.gp_weight, self.drift, self.r1_gamma = float(gp_weight), float(drift), float(r1_gamma)
        self.latent_dim = generator.inputs[0].shape[-1]
        # the critic's estimate of the Wasserstein distance under WGAN-GP; under the logistic loss just the gap
        self.tracked = ("d_loss", "g_loss", "gradient_penalty", "wasserstein" if loss == "wgan-gp" else "score_gap",
                        "real_score")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.tracked}
        self.growth_callbacks: list[keras.callbacks.Callback] = []  # set by the Trainer: progress, Gs
        self.built = True  # built functional models; fit() under tf.distribute checks this

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def build_optimizers(self) -> None:
        for optimizer, model in ((self.g_optimizer, self.generator), (self.d_optimizer, self.discriminator)):
            if not optimizer.built:  # a resumed phase's were built (and restored) by the Trainer
                optimizer.build(model.trainable_variables)

    def checkpoint_items(self) -> dict[str, Any]:
        return self.items

    def saved_models(self) -> dict[str, keras.Model]:
        return {}  # the Trainer saves phase_models() at the phase's end, not at every tick

    def phase_models(self) -> dict[str, keras.Model]:
        return {"generator": self.sampler, "discriminator": self.discriminator}

    def training_callbacks(self) -> list[keras.callbacks.Callback]:
        return self.growth_callbacks

    def graph(self):
        return "generator_and_discriminator", lambda: self.discriminator(
            self.generator(tf.zeros([1, self.latent_dim]), training=False), training=False)

    def noise(self, batch_size: int, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """A step's latents of the D update and of the G update, and WGAN-GP's mixing weights (drawn under either
        loss, so that a step's latents do not depend on it)."""
        return {"z_d": tf.random.stateless_normal([batch_size, self.latent_dim], seed),
                "z_g": tf.random.stateless_normal([batch_size, self.latent_dim], seeds.stream(seed, seeds.G_LATENT)),
                "eps": tf.random.stateless_uniform([batch_size, 1, 1, 1], seeds.stream(seed, seeds.PENALTY_MIX))}

    def train_step(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # the replicas' gradients are summed
        reals = batch["real"]
        if self.fading:
            low = tf.nn.avg_pool2d(reals, 2, 2, "VALID")
            low = tf.repeat(tf.repeat(low, 2, axis=1), 2, axis=2)  # nearest-neighbour upsampling
            reals = (1.0 - self.alpha) * low + self.alpha * reals
        fakes = self.generator(batch["z_d"], training=True)
        with tf.GradientTape() as tape:
            if self.loss_kind == "wgan-gp":
                real_out = self.discriminator(reals, training=True)
                fake_out = self.discriminator(fakes, training=True)
                penalty = self._interpolate_penalty(reals, fakes, batch["eps"])
                gap = tf.reduce_mean(real_out) - tf.reduce_mean(fake_out)
                d_loss = -gap + self.gp_weight * penalty + self.drift * tf.reduce_mean(tf.square(real_out))
            else:
                real_out, penalty = self._scores_and_r1(reals)
                fake_out = self.discriminator(fakes, training=True)
                gap = tf.reduce_mean(real_out) - tf.reduce_mean(fake_out)
                d_loss = (tf.reduce_mean(tf.nn.softplus(fake_out)) + tf.reduce_mean(tf.nn.softplus(-real_out))
                          + 0.5 * self.r1_gamma * penalty)
            d_share = d_loss / replicas
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_share, d_vars), d_vars))
        with tf.GradientTape() as tape:
            scores = self.discriminator(self.generator(batch["z_g"], training=True), training=True)
            g_loss = -tf.reduce_mean(scores) if self.loss_kind == "wgan-gp" else tf.reduce_mean(tf.nn.softplus(-scores))
            g_share = g_loss / replicas
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_share, g_vars), g_vars))
        return report(self.trackers, dict(zip(self.tracked, (d_loss, g_loss, penalty, gap, tf.reduce_mean(real_out)))))

    def _interpolate_penalty(self, reals: tf.Tensor, fakes: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        """WGAN-GP: the mean of (|grad D(x^)| - 1)^2 at x^ = x + eps * (G(z) - x)."""
        mixed = reals + eps * (fakes - reals)
        with tf.GradientTape() as inner:
            inner.watch(mixed)
            mixed_out = self.discriminator(mixed, training=True)
        slopes = tf.sqrt(tf.reduce_sum(tf.square(inner.gradient(mixed_out, mixed)), axis=[1, 2, 3]) + 1e-8)
        return tf.reduce_mean(tf.square(slopes - 1.0))

    def _scores_and_r1(self, reals: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """D(x) and R1, the mean of |grad D(x)|^2, from one pass of D over the reals."""
        with tf.GradientTape() as inner:
            inner.watch(reals)
            real_out = self.discriminator(reals, training=True)
        gradient = tf.cast(inner.gradient(real_out, reals), tf.float32)
        return real_out, tf.reduce_mean(tf.reduce_sum(tf.square(gradient), axis=[1, 2, 3]))


class GrowthProgress(keras.callbacks.Callback):
    """The growth's bookkeeping around fit(): before each step the fade-in's alpha (the fade layers' and the reals'
    blend), min(1, images / length); at each tick (epoch) the counters a checkpoint keeps (`progress`: phase images,
    all images, steps, seconds, the next step's alpha) and the tick's throughput in its logs; the fade-in strip
    halfway through a fade; `at_end` at the phase's last tick (before fit_gan's checkpoint of it: these callbacks
    run first); --stop-after-images at the first tick that reaches it."""

    def __init__(self, progress: Any, length: int, batch: int, fade_layers: list, resolution: int, phase: int,
                 phase_images: int, at_half=None, at_end=None, stop_after: int | None = None) -> None:
        super().__init__()
        self.progress, self.length, self.batch, self.fade_layers = progress, length, batch, fade_layers
        self.resolution, self.phase, self.phase_images = resolution, phase, phase_images
        self.at_half, self.at_end, self.stop_after = at_half, at_end, stop_after
        self.done = int(progress.phase_images.numpy())
        self.total = int(progress.total_images.numpy())
        self.seconds = float(progress.phase_seconds.numpy())
        self.stopped = False

    def alpha(self) -> float:
        return min(1.0, self.done / self.length) if self.fade_layers else 1.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        import time

        self.tick_started, self.tick_images, self.tick = time.time(), 0, epoch + 1

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.fade_layers:
            alpha = self.alpha()
            self.progress.alpha.assign(alpha)
            for layer in self.fade_layers:
                layer.alpha.assign(alpha)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        before = self.done
        self.done += self.batch
        self.total += self.batch
        self.tick_images += self.batch
        if self.fade_layers and self.at_half is not None and before < self.length // 2 <= self.done:
            self.at_half(self.alpha(), self.tick)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import time

        elapsed = time.time() - self.tick_started
        self.seconds += elapsed
        steps = self.tick_images // self.batch
        progress = self.progress
        progress.phase_images.assign(self.done)
        progress.total_images.assign(self.total)
        progress.steps.assign_add(steps)
        progress.phase_seconds.assign(self.seconds)
        progress.alpha.assign(self.alpha())
        if logs is not None:
            logs.update({"progress/alpha": self.alpha(), "progress/resolution": float(self.resolution),
                         "progress/phase": float(self.phase), "progress/images": float(self.total),
                         "progress/images_per_second": self.tick_images / max(elapsed, 1e-9)})
        if self.at_end is not None and self.done >= self.phase_images:  # the last tick, before its checkpoint
            self.at_end(self.seconds)
        if self.stop_after is not None and self.total >= self.stop_after:
            self.model.stop_training = self.stopped = True


class GeneratorAverage(keras.callbacks.Callback):
    """Gs <- beta * Gs + (1 - beta) * G after every step, over `pairs` of (Gs variable, G variable): the paper's
    average of G's weights, outside the replicas (the variables are the same on every one)."""

    def __init__(self, pairs: list, beta: float) -> None:
        super().__init__()
        self.pairs, self.beta = pairs, float(beta)
        self._update = tf.function(self._assign)

    def _assign(self) -> None:
        for smoothed, weight in self.pairs:
            smoothed.assign(self.beta * smoothed + (1.0 - self.beta) * weight)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._update()
