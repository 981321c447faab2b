"""The training stream: an endless, reproducible sequence of batches.

Pass p over the data visits the examples in an order fixed by (seed, p), and the latent noise of step s is
drawn from a stateless generator keyed by (seed, s). So batch s is a pure function of (seed, s): a run
resumed at step s sees exactly the batches an unbroken run would have seen, and under tf.distribute each
replica receives its own slice of both the data and the noise.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

Example = dict[str, tf.Tensor]
NoiseFn = Callable[[int, tf.Tensor], Example]


def training_stream(num_examples: int, take: Callable[[tf.Tensor], Example] | None, batch_size: int, seed: int,
                    start_step: int = 0, noise: NoiseFn | None = None, fresh_each_pass: bool = False
                    ) -> tf.data.Dataset:
    """Batches of `take(index)` dicts, merged with `noise(batch_size, seed_pair)` per step.

    fresh_each_pass: for examples drawn anew on every pass (SRGAN's random crops, keyed by their index): `take`
    then receives pass * num_examples + index, so that pass p draws other crops than pass 0 did.
    take None: a stage that learns from its own draws alone (Age-cGAN's encoder reads G's images): the batches
    are the noise of each step.
    """
    seed = int(seed)
    if take is None:
        if noise is None:
            raise ValueError("a training stream without examples needs the noise to draw")
        steps = tf.data.Dataset.counter(start_step)
        return steps.map(lambda step: noise(batch_size, tf.stack([tf.constant(seed, tf.int64), step])),
                         num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    if num_examples < 1:
        raise ValueError("the training stream needs at least one example")

    def one_pass(pass_index: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), pass_index]))
        if fresh_each_pass:
            order += pass_index * num_examples
        return tf.data.Dataset.from_tensor_slices(order)

    indices = tf.data.Dataset.counter().flat_map(one_pass).skip(start_step * batch_size)
    examples = indices.map(take, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # A file that passed the up-front check but fails to decode (e.g. truncated) is dropped and logged,
    # never a crash in the middle of an epoch.
    examples = examples.ignore_errors(log_warning=True)
    batches = examples.batch(batch_size, drop_remainder=True)
    if noise is not None:
        steps = tf.data.Dataset.counter(start_step)

        def add_noise(batch: Example, step: tf.Tensor) -> Example:
            return {**batch, **noise(batch_size, tf.stack([tf.constant(seed, tf.int64), step]))}

        batches = tf.data.Dataset.zip(batches, steps).map(add_noise, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def in_memory(arrays: dict[str, "tf.Tensor"],
              transform: Callable[[Example], Example] | None = None) -> Callable[[tf.Tensor], Example]:
    """A `take` for data already in memory: row `index` of every array, then `transform` (e.g. to [-1, 1])."""
    tensors = {key: tf.convert_to_tensor(value) for key, value in arrays.items()}

    def take(index: tf.Tensor) -> Example:
        row = {key: tf.gather(value, index) for key, value in tensors.items()}
        return transform(row) if transform else row

    return take
