"""Trains the vanilla GAN for a few steps on one device and under MirroredStrategy over two logical CPUs.

Prints JSON {"single": [...losses, weights checksum], "mirrored": [...]}. Run in its own process: logical devices
must be configured before TensorFlow starts.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from chapters.vanilla_gan import models  # noqa: E402
from common.cli import base_parser  # noqa: E402
from common.data import in_memory  # noqa: E402
from common.gan import GAN  # noqa: E402
from common.run import Run  # noqa: E402
from common.train import Schedule, fit_gan  # noqa: E402

out = Path(sys.argv[1])
digits = np.load(Path(__file__).resolve().parents[1] / "datasets" / "mnist_8k.npz")["x"][:256]
take = in_memory({"real": digits}, lambda r: {"real": tf.cast(r["real"], tf.float32)[..., None] / 127.5 - 1.0})
results = {}
for name, strategy in (("single", tf.distribute.get_strategy()),
                       ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
    keras.utils.set_random_seed(3)
    args = base_parser("vanilla_gan", "", ("train",)).parse_args(
        ["--epochs", "1", "--steps-per-epoch", "6", "--batch-size", "16", "--run-dir", str(out / name)])
    run = Run(out / name).create()
    with strategy.scope():
        gan = GAN(models.build_generator(16, 32), models.build_discriminator(32), 16)
        gan.compile(models.optimizer(), models.optimizer())
    logs = fit_gan(gan, run, Schedule.from_args(args), strategy, len(digits), take, log=lambda _: None)
    weights = float(sum(np.abs(w.numpy()).sum() for w in gan.generator.weights))
    results[name] = {"replicas": strategy.num_replicas_in_sync, "logs": logs, "generator_abs_sum": weights}
print(json.dumps(results))
