"""Device setup every chapter calls once: GPU memory growth, precision policy, distribution strategy."""
from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from common.errors import UserError


def setup_devices(strategy: str = "auto", mixed_precision: bool = False, seed: int | None = None,
                  log=print) -> tf.distribute.Strategy:
    """Configures TensorFlow for this process and returns the strategy to build models under.

    Call before any model is built: memory growth and the dtype policy cannot change afterwards.
    """
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:  # lets two runs share a GPU instead of the first one grabbing all of its memory
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # devices already initialised (a second call in one process)
            pass
    if seed is not None:
        keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(_precision_policy(mixed_precision, gpus, log))
    return choose_strategy(strategy, gpus, log)


def _precision_policy(mixed_precision: bool, gpus: list, log) -> str:
    if not mixed_precision:
        return "float32"
    if not gpus:
        log("--mixed-precision: no GPU found, so training stays in float32 (float16 is slower on CPUs)")
        return "float32"
    return "mixed_float16"


def choose_strategy(name: str, gpus: list | None = None, log=print) -> tf.distribute.Strategy:
    """auto: mirrored over all GPUs when there are several, else the default (one device) strategy."""
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one"
    if name == "one":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        log(f"MirroredStrategy over {strategy.num_replicas_in_sync} devices")
        return strategy
    if name == "multiworker":
        config = os.environ.get("TF_CONFIG")
        if not config:
            raise UserError("--strategy multiworker needs the TF_CONFIG environment variable "
                            "(cluster addresses and this worker's task); see the README's 'Scaling out'")
        try:
            json.loads(config)
        except ValueError as error:
            raise UserError(f"TF_CONFIG is not valid JSON ({error})") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown --strategy {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes checkpoints, samples and logs in a multi-worker run."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0)
