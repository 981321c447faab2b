"""GANs as keras.Model subclasses whose train_step reads like the paper: update D, then update G.

One compiled step does both updates with its own GradientTape and optimizer, so each network's `trainable`
flag never has to be toggled. (The book compiles D, sets `D.trainable = False` and compiles G+D; under Keras 3
that freezes D for good: its weights never change again.)

Latent noise comes with the data (see common.data.stream): `noise(batch_size, seed)` is called inside
tf.data, so a step's noise is fixed by (seed, step) and split across replicas like the images.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import keras
import tensorflow as tf

from common import seeds
from common.losses import make_loss
from common.stabilize import Stabilizers, discriminator_views

Batch = dict[str, tf.Tensor]


def loss_scaled(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The optimizer a train step must use under the global precision policy: under mixed_float16 wrapped in
    a LossScaleOptimizer (float16 gradients underflow without a loss scale; the wrapper unscales before
    applying), else itself. Steps call its scale_loss() inside the tape either way."""
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def stabilizer_draws(uniform: tf.Tensor) -> Batch:
    """A step's (batch, 3) uniform draw (seed stream seeds.STABILIZER_UNIFORMS) under the names its users read:
    label_noise (batch, 2), per example the share of --label-noise by which the real and the fake target move,
    and penalty_mix (batch,), where WGAN-GP's gradient penalty interpolates between a real and a fake image."""
    return {"label_noise": uniform[:, :2], "penalty_mix": uniform[:, 2]}


def report(trackers: dict[str, keras.metrics.Metric], values: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Adds a step's values to their running means and returns the logs a train_step hands to Keras (every model
    of every chapter reports through here, so that the multi-worker shape below reaches all of them)."""
    for name, value in values.items():
        trackers[name].update_state(value)
    logs = {name: tracker.result() for name, tracker in trackers.items()}
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        # Keras reduces multi-worker logs with reduce(MEAN, axis=0), which needs a batch axis: give each
        # (already all-reduced) scalar one, so the reduction returns it as a scalar again.
        logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs


class GAN(keras.Model):
    """An unconditional GAN: generator(z) -> image, discriminator(image) -> realness."""

    tracked = ("d_loss", "g_loss", "d_real", "d_fake")

    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int,
                 options: Stabilizers = Stabilizers(), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.generator = generator
        self.latent_dim = latent_dim
        self.options = options
        # `critic` is what the loss reads (D's probability, or its raw score for hinge / WGAN-GP); `features`
        # its last hidden layer for feature matching. All three share D's weights.
        self.discriminator, self.critic, self.features = discriminator_views(discriminator, options)
        self.adversarial = make_loss(options.loss, options.label_smoothing, options.label_noise)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.tracked}
        self.average = None  # --average-generator: a GeneratorAverage, made in build_optimizers()
        self.built = True  # the networks are built functional models; fit() under tf.distribute checks this

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer,
                **kwargs: Any) -> None:
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = loss_scaled(d_optimizer), loss_scaled(g_optimizer)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Under a tf.distribute strategy Keras traces the model once on a first batch, reduced across replicas
        # as one structure, which MultiWorkerMirroredStrategy cannot do with a dict batch. There is nothing to
        # build: the networks are built functional models and our optimizers are built in build_optimizers().
        return

    # --- what a chapter may override -------------------------------------------------------------
    def noise(self, batch_size: int, seed: tf.Tensor) -> Batch:
        """Latent vectors for one step's D update and G update (stateless: fixed by `seed`)."""
        z = tf.unstack(tf.random.stateless_normal([2, batch_size, self.latent_dim], seed))
        uniform = tf.random.stateless_uniform([batch_size, 3], seeds.stream(seed, seeds.STABILIZER_UNIFORMS))
        # every tensor keeps the batch on axis 0: tf.distribute splits them there across replicas
        return {"z_d": z[0], "z_g": z[1], **stabilizer_draws(uniform)}

    def generator_inputs(self, batch: Batch, which: str) -> Any:
        """What G takes for the fakes of the D update ("d") or the G update ("g")."""
        return batch[f"z_{which}"]

    def generate(self, batch: Batch, which: str, training: bool = True) -> tf.Tensor:
        return self.generator(self.generator_inputs(batch, which), training=training)

    def discriminate(self, images: tf.Tensor, batch: Batch, which: str, training: bool = True,
                     network: keras.Model | None = None) -> tf.Tensor:
        """`which` is "real", "d" (fakes for the D update) or "g" (fakes for the G update)."""
        return (network or self.critic)(images, training=training)

    def graph(self) -> tuple[str, Callable[[], Any]]:
        """(name, forward pass) that fit_gan traces once for TensorBoard's Graphs tab: G then D."""
        def forward() -> Any:
            # the smallest batch D can take: --pack K judges K samples as one input
            batch = self.noise(self.options.pack, tf.constant([0, 0], tf.int64))
            return self.discriminate(self.generate(batch, "g", training=False), batch, "g", training=False)

        return "generator_and_discriminator", forward

    def checkpoint_items(self) -> dict[str, Any]:
        """Everything a checkpoint must hold to resume exactly."""
        items = {"generator": self.generator, "discriminator": self.discriminator,
                 "g_optimizer": self.g_optimizer, "d_optimizer": self.d_optimizer}
        if hasattr(self, "historical"):
            items["historical"] = {name: [*slots, self.historical_count[name]] for name, slots in self.historical.items()}
        if self.average is not None:
            items.update(self.average.checkpoint_items())
        return items

    def saved_models(self) -> dict[str, keras.Model]:
        """Models written to <run>/models/<name>.keras for inference in a fresh process (the weight average is
        what a user samples from when there is one; the raw G stays in the checkpoints)."""
        return {"generator": self.sampling_generator(), "discriminator": self.discriminator}

    def sampling_generator(self) -> keras.Model:
        return self.average.average if self.average is not None else self.generator

    def training_callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks the model needs during fit() (the weight average's update after each step)."""
        return [self.average] if self.average is not None else []

    # --- the step -------------------------------------------------------------------------------
    def build_optimizers(self) -> None:
        """Creates optimizer slots (and running weight averages) now, so a checkpoint can be restored into them."""
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)
        if self.options.average_generator and self.average is None:
            from common.ema import GeneratorAverage

            self.average = GeneratorAverage(self.generator, self.options.average_generator, self.statistics_inputs)
        if self.options.historical_averaging and not hasattr(self, "historical"):
            self.historical, self.historical_count = {}, {}
            for model in (self.discriminator, self.generator):
                self.historical[model.name] = [tf.Variable(tf.cast(w, tf.float32), trainable=False)
                                               for w in model.trainable_variables]
                self.historical_count[model.name] = tf.Variable(0, dtype=tf.int64, trainable=False)

    def statistics_inputs(self, batches: int = 8, batch_size: int = 64) -> Iterable[Any]:
        """The same G inputs at every call (512 by default), on which a weight average recomputes its
        BatchNormalization statistics (common.ema); drawn lazily, one batch at a time."""
        for index in range(batches):
            yield self._statistics_batch(batch_size, tf.constant([0, seeds.AVERAGE_STATISTICS + index], tf.int64))

    def _statistics_batch(self, batch_size: int, key: tf.Tensor) -> Any:
        """G's inputs of the G update drawn from `key` (a subclass may skip the draws G does not take)."""
        return self.generator_inputs(self.noise(batch_size, key), "g")

    def train_step(self, batch: Batch) -> dict[str, tf.Tensor]:
        d_loss, d_real, d_fake = self.discriminator_step(batch)
        g_loss = self.generator_step(batch)
        return self.report(dict(zip(self.tracked, (d_loss, g_loss, d_real, d_fake))))

    def report(self, values: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Adds a step's values to the running means and returns the logs train_step hands to Keras."""
        return report(self.trackers, values)

    def discriminator_loss(self, batch: Batch) -> tuple[tf.GradientTape, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """(tape, per-example loss, loss, D(real), D(fake)) of one D step, not yet applied."""
        real = batch["real"]
        fake = self.generate(batch, "d")
        with tf.GradientTape() as tape:
            real_out = self.discriminate(real, batch, "real")
            fake_out = self.discriminate(fake, batch, "d")
            per_example = self.adversarial.discriminator(real_out, fake_out, batch["label_noise"])
            if self.options.loss == "wgan-gp":
                per_example += self.options.gp_weight * self.gradient_penalty(real, fake, batch)
            loss = tf.nn.compute_average_loss(per_example)  # sums to the global-batch mean over replicas
            loss += self.historical_penalty(self.discriminator)
        return tape, per_example, loss, real_out, fake_out

    def discriminator_step(self, batch: Batch) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        tape, per_example, loss, real_out, fake_out = self.discriminator_loss(batch)
        self._apply(self.d_optimizer, tape, loss, self.discriminator)
        return tf.reduce_mean(per_example), _mean(real_out), _mean(fake_out)

    def generator_step(self, batch: Batch) -> tf.Tensor:
        with tf.GradientTape() as tape:
            fake = self.generate(batch, "g")
            if self.features is not None:  # Salimans et al.: match D's feature statistics, not its verdict
                real_mean = tf.reduce_mean(self.discriminate(batch["real"], batch, "real", network=self.features), 0)
                fake_mean = tf.reduce_mean(self.discriminate(fake, batch, "g", network=self.features), 0)
                distance = tf.reduce_sum(tf.square(tf.cast(real_mean - fake_mean, tf.float32)))
                per_example = tf.fill([tf.shape(fake)[0]], distance)
            else:
                per_example = self.adversarial.generator(self.discriminate(fake, batch, "g"))
            loss = (tf.nn.compute_average_loss(per_example) + self.historical_penalty(self.generator)
                    + self.generator_penalty(fake))
        self._apply(self.g_optimizer, tape, loss, self.generator)
        return tf.reduce_mean(per_example)

    def gradient_penalty(self, real: tf.Tensor, fake: tf.Tensor, batch: Batch) -> tf.Tensor:
        """WGAN-GP (Gulrajani et al. 2017): (||grad D(x_hat)|| - 1)^2 on random points between real and fake."""
        shape = tf.concat([tf.shape(real)[:1], tf.ones([tf.rank(real) - 1], tf.int32)], 0)
        epsilon = tf.cast(tf.reshape(batch["penalty_mix"][:tf.shape(real)[0]], shape), real.dtype)
        mixed = real + epsilon * (tf.cast(fake, real.dtype) - real)
        with tf.GradientTape() as inner:
            inner.watch(mixed)
            score = tf.reduce_sum(tf.cast(self.discriminate(mixed, batch, "real"), tf.float32))
        gradient = tf.reshape(tf.cast(inner.gradient(score, mixed), tf.float32), [tf.shape(mixed)[0], -1])
        per_sample = tf.square(tf.norm(gradient + 1e-12, axis=1) - 1.0)
        if self.options.pack > 1:  # one penalty per packed group, like the loss
            per_sample = tf.reduce_mean(tf.reshape(per_sample, [-1, self.options.pack]), axis=1)
        return per_sample

    def generator_penalty(self, fake: tf.Tensor) -> tf.Tensor:
        """A chapter's extra term in G's loss on this replica's fakes (none here); a share of the global loss,
        like historical_penalty's."""
        return tf.constant(0.0)

    def historical_penalty(self, model: keras.Model) -> tf.Tensor:
        """Salimans et al.: lambda * ||theta - mean of past theta||^2, the mean kept in non-trainable slots."""
        if not self.options.historical_averaging:
            return tf.constant(0.0)
        averages = self.historical[model.name]
        count = tf.cast(self.historical_count[model.name], tf.float32)
        penalty = tf.add_n([tf.reduce_sum(tf.square(tf.cast(w, tf.float32) - a))
                            for w, a in zip(model.trainable_variables, averages)])
        for weight, average in zip(model.trainable_variables, averages):  # running mean including this step
            average.assign(average + (tf.cast(weight, tf.float32) - average) / (count + 1.0))
        self.historical_count[model.name].assign_add(1)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return self.options.historical_averaging * penalty / replicas

    @staticmethod
    def _apply(optimizer: keras.optimizers.Optimizer, tape: tf.GradientTape, loss: tf.Tensor,
               model: keras.Model) -> None:
        with tape:  # record the loss scaling too, or no gradient reaches the variables (mixed precision)
            scaled = optimizer.scale_loss(loss)
        variables = model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables))

    def sample(self, inputs: Any) -> tf.Tensor:
        """Images for fixed inputs (a latent batch, or what `generate` needs), with inference-mode layers."""
        return self.sampling_generator()(inputs, training=False)


def _mean(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.cast(values, tf.float32))


class ConditionalGAN(GAN):
    """generator([z, one-hot label]) and discriminator([image, one-hot label]).

    Real images come with their true labels (batch["labels"], one-hot); fakes get random labels drawn with
    the noise, so D judges whether an image matches its condition.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int, num_classes: int,
                 **kwargs: Any) -> None:
        super().__init__(generator, discriminator, latent_dim, **kwargs)
        self.num_classes = num_classes

    def noise(self, batch_size: int, seed: tf.Tensor) -> Batch:
        batch = super().noise(batch_size, seed)
        label_seed = seeds.stream(seed, seeds.CONDITION_LABELS)
        classes = tf.random.stateless_uniform([batch_size, 2], label_seed, maxval=self.num_classes, dtype=tf.int32)
        batch["labels_d"] = tf.one_hot(classes[:, 0], self.num_classes)
        batch["labels_g"] = tf.one_hot(classes[:, 1], self.num_classes)
        return batch

    def generator_inputs(self, batch: Batch, which: str) -> Any:
        return [batch[f"z_{which}"], batch[f"labels_{which}"]]

    def discriminate(self, images: tf.Tensor, batch: Batch, which: str, training: bool = True,
                     network: keras.Model | None = None) -> tf.Tensor:
        labels = batch["labels"] if which == "real" else batch[f"labels_{which}"]
        return (network or self.critic)([images, labels], training=training)
