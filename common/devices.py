"""Device setup every chapter calls once: GPU memory growth, precision policy, distribution strategy."""
from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from common.errors import UserError


PRECISIONS = ("auto", "float32", "bfloat16", "float16")
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def setup_devices(strategy: str = "auto", precision: str | bool = "float32", seed: int | None = None,
                  log=print, bf16_on_cpu: bool = True, reproducible_on_cpu: bool = False
                  ) -> tf.distribute.Strategy:
    """Configures TensorFlow for this process and returns the strategy to build models under.

    `precision` is --precision (auto, float32, bfloat16, float16; True = the old --mixed-precision, float16).
    `bf16_on_cpu`: whether `auto` may pick bfloat16 on a CPU for this chapter (its results hold under it).
    `reproducible_on_cpu`: on a machine without a GPU, run one op at a time and leave the step's graph as traced
    (no Grappler rewrites), so that a run repeats bit for bit and a resumed run matches an unbroken one. Measured
    on a 2-core CPU: with TensorFlow's defaults, or one inter-op thread alone, repeat runs of one seed could part by
    1e-4..1e-3 in the weights within 3 steps; with both they matched, at the same CPU time (the wall time 7 %
    longer: a core sometimes waits).
    Call before any model is built: memory growth, threads and the dtype policy cannot change afterwards.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if reproducible_on_cpu and not gpus:
        try:
            tf.config.threading.set_inter_op_parallelism_threads(1)
            tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
        except RuntimeError:  # TensorFlow already started in this process (a test): leave it as it runs
            pass
    for gpu in gpus:
        try:  # lets two runs share a GPU instead of the first one grabbing all of its memory
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # devices already initialised (a second call in one process)
            pass
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if precision is True:
        precision = "float16"
    elif precision is False:
        precision = "float32"
    keras.mixed_precision.set_global_policy(POLICIES[choose_precision(precision, gpus, log, bf16_on_cpu)])
    return choose_strategy(strategy, gpus, log)


def precision_of(args) -> str:
    """The precision a chapter's flags ask for: --precision, with the older --mixed-precision meaning float16."""
    return "float16" if getattr(args, "mixed_precision", False) else getattr(args, "precision", "float32")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """AVX512-BF16 or AMX-BF16 in the CPU flags: bfloat16 matmuls and convolutions at twice float32's rate."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as handle:
                cpuinfo = handle.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool({"avx512_bf16", "amx_bf16"} & flags)
    return False


def choose_precision(requested: str, gpus: list, log=print, bf16_on_cpu: bool = True,
                     cpuinfo: str | None = None) -> str:
    """float32, bfloat16 or float16 for `requested`; `auto` says in one line what it chose and why.

    Variables, optimizer state and losses stay float32 under either mixed policy (Keras keeps float32
    variables), so checkpoints resume under any precision.
    """
    if requested not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "float16" and not gpus:
        log("--precision float16: no GPU found, so training stays in float32 (float16 is slower on CPUs; "
            "bfloat16 is the CPU's fast format)")
        return "float32"
    if requested != "auto":
        return requested
    if gpus:
        major = _gpu_compute_capability(gpus[0])
        if major is not None and major >= 7:
            log(f"precision auto: float16 with loss scaling (a GPU with tensor cores, compute capability {major}.x)")
            return "float16"
        log("precision auto: float32 (this GPU has no float16 tensor cores)")
        return "float32"
    if not cpu_has_native_bf16(cpuinfo):
        log("precision auto: float32 (this CPU has no native bfloat16: no avx512_bf16 or amx_bf16 flag)")
        return "float32"
    if not bf16_on_cpu:
        log("precision auto: float32 (this chapter's results do not hold in bfloat16; --precision bfloat16 "
            "forces it)")
        return "float32"
    log("precision auto: bfloat16 compute, float32 weights (this CPU has native bfloat16: about twice the "
        "float32 speed)")
    return "bfloat16"


def _gpu_compute_capability(gpu) -> int | None:
    try:
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
    except (ValueError, RuntimeError):
        return None
    return capability[0] if capability else None


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


def replicas_dividing(strategy: tf.distribute.Strategy, batch_size: int, flag: str) -> int:
    """The strategy's replicas in sync, which must divide the global batch `batch_size` (from `flag`)."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UserError(f"{flag} {batch_size} does not split evenly over the {replicas} replicas of --strategy; "
                        f"pass a multiple of {replicas}")
    return replicas
