"""One training step of every chapter's stages under MirroredStrategy over two logical CPUs.

    python tests/mirrored_every_chapter.py OUT_DIR [NAME[,NAME...] [FLAGS...]]   (default: every stage, tiny flags;
                                                                         FLAGS are added to each NAME's)

Prints one JSON line, {chapter: {"code": exit code, "replicas": replicas in sync}}. Runs in its own process:
logical devices must be configured before TensorFlow starts, and `--strategy mirrored` (all GPUs, else one CPU)
is pointed at the two of them.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import importlib  # noqa: E402

from common import devices  # noqa: E402
from common.cli import run_main  # noqa: E402

replicas = []
real_choose = devices.choose_strategy
# One strategy for every chapter: with a new MirroredStrategy per chapter, the second chapter's step failed here
# with a collective "shape mismatch" between its replicas (each chapter alone passes; a process runs one chapter
# in real use).
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def two_cpus(name, gpus=None, log=print):
    if name != "mirrored":
        return real_choose(name, gpus, log)
    replicas.append(mirrored.num_replicas_in_sync)
    return mirrored


devices.choose_strategy = two_cpus
ONE_STEP = ["--epochs", "1", "--steps-per-epoch", "1"]  # PGAN's length is its image counts, in its flags
AGE = ["--width", "0.125", "--num-faces", "48", "--batch-size", "8"]
# name: (chapter, flags, run folder); Age-cGAN's encoder and optimize stages go on in its GAN stage's run
CHAPTERS = {
    "vanilla_gan": ("vanilla_gan", ["--batch-size", "16"], "vanilla_gan"),
    "anime_dcgan": ("anime_dcgan", ["--faces", "24", "--batch-size", "4"], "anime_dcgan"),
    "gan_3d": ("gan_3d", ["--cube-len", "32", "--num-shapes", "32", "--grid", "4", "--batch-size", "32"], "gan_3d"),
    "age_cgan": ("age_cgan", ["--stage", "gan", *AGE], "age_cgan"),
    "age_cgan_encoder": ("age_cgan", ["--stage", "encoder", *AGE, "--encoder-steps", "1"], "age_cgan"),
    "age_cgan_optimize": ("age_cgan", ["--stage", "optimize", *AGE, "--optimize-steps", "1", "--optimize-batch", "4"],
                          "age_cgan"),
    "pgan": ("pgan", ["--max-resolution", "8", "--stable-images", "32", "--fade-images", "32", "--tick-images", "32",
                      "--batch-size", "16", "--batch-sizes", "", "--faces", "48", "--latent-dim", "16",
                      "--max-filters", "8"], "pgan"),
    "srgan": ("srgan", ["--residual-blocks", "1", "--hr-size", "48", "--batch-size", "2", "--pretrain-epochs", "1",
                        "--arch", "paper", "--content-loss", "mse", "--bicubic-skip", "--eval-data",
                        "tests/fixtures/srgan_held_out"], "srgan"),
}
out, results = Path(sys.argv[1]), {}
# the optimize stage's face-recognition network: any Keras embedding model (--fr-model PATH.keras); a small one
# here, the shipped face-api network costs half a minute a step on two logical CPUs
import keras  # noqa: E402

out.mkdir(parents=True, exist_ok=True)
face = keras.Input((32, 32, 3))
keras.Model(face, keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(face))).save(out / "fr.keras")
CHAPTERS["age_cgan_optimize"][1].extend(["--fr-model", str(out / "fr.keras")])
if len(sys.argv) > 2:
    CHAPTERS = {name: (CHAPTERS[name][0], CHAPTERS[name][1] + sys.argv[3:], CHAPTERS[name][2])
                for name in sys.argv[2].split(",")}
for name, (chapter, flags, folder) in CHAPTERS.items():
    main = importlib.import_module(f"chapters.{chapter}.main").main
    before = len(replicas)
    try:
        run_main(main, ["--strategy", "mirrored", *([] if chapter == "pgan" else ONE_STEP), *flags,
                        "--run-dir", str(out / folder)])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    results[name] = {"code": code, "replicas": replicas[before:]}
print(json.dumps(results))
