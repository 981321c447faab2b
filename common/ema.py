"""An exponential moving average of the generator's weights, sampled and saved instead of the raw generator.

The raw generator jumps around from step to step (the game never settles); the average of its recent weights
draws cleaner, steadier images (Karras et al. 2018, "G_smoothed"; Yazici et al. 2019). The average is a copy
of the generator updated after every training step, outside the compiled step (in cross-replica context, so
it works under any tf.distribute strategy), and checkpointed with the run so that --resume stays exact.

BatchNormalization's moving statistics are not weights to average: they describe the activations of the
network they sit in, and the averaged weights make other activations than the raw G's. Averaging them too
(as before) left the average normalising with the raw G's statistics: a 3D-GAN run's average drew empty
volumes, and another's lost its chairs' legs (chapters/gan_3d/README.md). So they are recomputed from the
average's own activations at every epoch end, before anything samples or saves it (BigGAN's "standing
statistics", Brock et al. 2019, done exactly for inference mode).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import keras
import tensorflow as tf


class GeneratorAverage(keras.callbacks.Callback):
    """The exponential moving average with decay d of G's weights after each step, zero-debiased as Adam's
    moments are: after n steps it is sum_k d^(n-k) (1 - d) w_k / (1 - d^n), so the random initial weights have no
    share in it and d is exactly the decay asked for. (The (1 + n) / (10 + n) warm-up used before capped d
    below 0.999 for the first 9,000 steps, so 0.999 and 0.9995 gave the same average in a 64-epoch run.)

    `statistics_inputs()` gives fixed batches of G's inputs, on which the average's BatchNormalization layers
    (those directly in G) get their moving statistics at each epoch end; a G with such layers needs it."""

    def __init__(self, generator: keras.Model, decay: float,
                 statistics_inputs: Callable[[], Iterable[Any]] | None = None) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must be in (0, 1), got {decay}")
        self.generator, self.decay = generator, decay
        self.average = keras.models.clone_model(generator)
        self.average.set_weights(generator.get_weights())
        self.norms = [layer for layer in self.average.layers if isinstance(layer, keras.layers.BatchNormalization)]
        if any(_has_batch_norm(layer) for layer in self.average.layers if isinstance(layer, keras.Model)):
            raise ValueError("averaging a generator with BatchNormalization inside a nested model is not supported")
        if self.norms and statistics_inputs is None:
            raise ValueError("averaging a generator with BatchNormalization needs statistics_inputs")
        # what each norm normalises, as a model of the average's own layers
        self._probes = [keras.Model(self.average.inputs, norm.input) for norm in self.norms]
        self.statistics_inputs = statistics_inputs
        own = {id(v) for norm in self.norms for v in (norm.moving_mean, norm.moving_variance)}
        self._pairs = [(a, w) for a, w in zip(self.average.weights, generator.weights) if id(a) not in own]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="average_updates")
        self._update = tf.function(self._assign)

    def checkpoint_items(self) -> dict:
        return {"generator_average": self.average, "generator_average_updates": self.updates}

    def _assign(self) -> None:
        # average_n = b_n average_(n-1) + (1 - b_n) w_n with b_n = (d - d^n) / (1 - d^n) is a_n / (1 - d^n) of the
        # zero-started a_n = d a_(n-1) + (1 - d) w_n, kept without a second copy of the weights (b_1 = 0: w_1)
        n = tf.cast(self.updates + 1, tf.float64)
        d = tf.constant(self.decay, tf.float64)
        decay = tf.cast((d - d ** n) / (1.0 - d ** n), tf.float32)
        for average, weight in self._pairs:
            if "float" in str(average.dtype):
                value = tf.cast(weight, tf.float32)
                average.assign(tf.cast(decay * tf.cast(average, tf.float32) + (1.0 - decay) * value, average.dtype))
            else:  # counters (e.g. a seed generator's state) are copied
                average.assign(weight)
        self.updates.assign_add(1)

    def recompute_statistics(self) -> None:
        """Sets each BatchNormalization layer's moving mean and variance to those of its inputs in the average
        itself, in inference mode, over all of statistics_inputs(): layer by layer, in order, since a layer's
        inputs depend on the statistics of the layers before it."""
        for norm, probe in zip(self.norms, self._probes):
            total = squares = count = 0.0
            for inputs in self.statistics_inputs():  # per batch in float32, summed in float64
                x = tf.cast(probe(inputs, training=False), tf.float32)
                axes = [i for i in range(len(x.shape)) if i != norm.axis % len(x.shape)]
                mean, variance = (tf.cast(m, tf.float64) for m in tf.nn.moments(x, axes))
                size = float(tf.size(x)) / float(x.shape[norm.axis])
                total, squares, count = total + size * mean, squares + size * (variance + tf.square(mean)), count + size
            mean = total / count
            norm.moving_mean.assign(tf.cast(mean, norm.moving_mean.dtype))
            norm.moving_variance.assign(tf.cast(tf.maximum(squares / count - tf.square(mean), 0.0),
                                                norm.moving_variance.dtype))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._update()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.norms:  # fit_gan runs this callback first: the epoch's samples and saved model see the new ones
            self.recompute_statistics()


def _has_batch_norm(model: keras.Model) -> bool:
    return any(isinstance(layer, keras.layers.BatchNormalization)
               or (isinstance(layer, keras.Model) and _has_batch_norm(layer)) for layer in model.layers)
