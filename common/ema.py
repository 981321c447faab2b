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
    """average <- d * average + (1 - d) * generator after each step, with d warmed up as (1 + n) / (10 + n)
    so that the first epochs' average is not dominated by the random initial weights."""

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
        n = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + n) / (10.0 + n))
        for average, weight in zip(self.average.weights, self.generator.weights):
            if "float" in str(average.dtype):
                value = tf.cast(weight, tf.float32)
                average.assign(tf.cast(decay * tf.cast(average, tf.float32) + (1.0 - decay) * value, average.dtype))
            else:  # counters (e.g. a seed generator's state) are copied
                average.assign(weight)
        self.updates.assign_add(1)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._update()
