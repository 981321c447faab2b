"""An exponential moving average of the generator's weights, sampled and saved instead of the raw generator.

The raw generator jumps around from step to step (the game never settles); the average of its recent weights
draws cleaner, steadier images (Karras et al. 2018, "G_smoothed"; Yazici et al. 2019). The average is a copy
of the generator updated after every training step, outside the compiled step (in cross-replica context, so
it works under any tf.distribute strategy), and checkpointed with the run so that --resume stays exact.
"""
from __future__ import annotations

import keras
import tensorflow as tf


class GeneratorAverage(keras.callbacks.Callback):
    """The exponential moving average with decay d of G's weights after each step, zero-debiased as Adam's
    moments are: after n steps it is sum_k d^(n-k) (1 - d) w_k / (1 - d^n), so the random initial weights have no
    share in it and d is exactly the decay asked for. (The (1 + n) / (10 + n) warm-up used before capped d
    below 0.999 for the first 9,000 steps, so 0.999 and 0.9995 gave the same average in a 64-epoch run.)"""

    def __init__(self, generator: keras.Model, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must be in (0, 1), got {decay}")
        self.generator, self.decay = generator, decay
        self.average = keras.models.clone_model(generator)
        self.average.set_weights(generator.get_weights())
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
        for average, weight in zip(self.average.weights, self.generator.weights):
            if "float" in str(average.dtype):
                value = tf.cast(weight, tf.float32)
                average.assign(tf.cast(decay * tf.cast(average, tf.float32) + (1.0 - decay) * value, average.dtype))
            else:  # counters (e.g. a seed generator's state) are copied
                average.assign(weight)
        self.updates.assign_add(1)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._update()
