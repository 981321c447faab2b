"""--precision on every chapter: one train step under the mixed_float16 and mixed_bfloat16 policies (on the CPU,
tiny networks), the choice --precision auto makes, and a bfloat16 run resumed in float32.

What a run relies on: finite losses, generator outputs in float32 (the last activation is float32), and under
float16 both optimizers wrapped in a LossScaleOptimizer so float16 gradients do not underflow. The step is the
chapter's own `train_step` (the code `fit_gan` compiles), run eagerly here to save tracing time.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import run_main

BATCH = 2
# float16 convolutions run 50-100x slower than float32 on a CPU: the SRGAN steps (24 -> 96) take one image
SR_BATCH = 1


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def mixed(request):
    """The global policy for the test (models must be built under it), float32 again after."""
    import keras

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy(before)


def _one_step(model, arrays: dict, batch_size: int = BATCH) -> dict:
    """One step of `model` on the first batch of the training stream (data + the model's noise)."""
    from common.data.stream import in_memory, training_stream

    model.build_optimizers()
    n = len(next(iter(arrays.values())))
    batch = next(iter(training_stream(n, in_memory(arrays), batch_size, seed=0, noise=model.noise)))
    logs = model.train_step(batch)
    return {name: float(value) for name, value in logs.items()}


def _check(model, logs: dict, generator_input, optimizers=("d_optimizer", "g_optimizer")) -> None:
    import keras

    policy = keras.mixed_precision.global_policy()
    assert logs and all(math.isfinite(v) for v in logs.values()), logs
    for name in optimizers:  # loss scaling for float16 only: bfloat16 has float32's exponent range
        scaled = isinstance(getattr(model, name), keras.optimizers.LossScaleOptimizer)
        assert scaled == (policy.name == "mixed_float16"), name
    assert model.generator.compute_dtype == policy.compute_dtype  # the policy really applied to the layers
    assert all(v.dtype == "float32" for v in model.generator.trainable_variables)  # float32 master weights
    out = model.generator(generator_input, training=False)
    assert out.dtype == "float32", out.dtype
    assert np.isfinite(np.asarray(out)).all()


def _images(shape, count: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, *shape)).astype(np.float32)


def _latent(dim: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((BATCH, dim)).astype(np.float32)


def test_vanilla_gan(mixed):
    from chapters.vanilla_gan import models
    from common.gan import GAN

    gan = GAN(models.build_generator(8, hidden=16), models.build_discriminator(hidden=16), 8)
    gan.compile(d_optimizer=models.optimizer(), g_optimizer=models.optimizer())
    _check(gan, _one_step(gan, {"real": _images(models.IMAGE_SHAPE)}), _latent(8))


@pytest.mark.parametrize("arch", ["dcgan", "book"])
def test_anime_dcgan(mixed, arch):
    from chapters.anime_dcgan import models
    from common.gan import GAN

    gan = GAN(models.build_generator(arch, 32, 8, filters=4), models.build_discriminator(arch, 32, filters=4), 8)
    d_optimizer, g_optimizer = models.optimizers(arch)
    gan.compile(d_optimizer=d_optimizer, g_optimizer=g_optimizer)
    _check(gan, _one_step(gan, {"real": _images((32, 32, 3))}), _latent(8))


def test_srgan_pretraining_and_adversarial_steps_at_24_to_96(mixed):
    from chapters.srgan import models
    from chapters.srgan.images import quantize

    hr = _images((96, 96, 3), count=2)
    lr = quantize(models.downsample(hr)).numpy()
    resnet = models.SRResNet(models.build_generator(1))
    resnet.compile(g_optimizer=models.optimizer())
    _check(resnet, _one_step(resnet, {"lr": lr, "hr": hr}, SR_BATCH), lr[:1], optimizers=("g_optimizer",))
    # the adversarial phase with the VGG19 content loss (random weights: no download in the tests)
    vgg = models.build_vgg_features(None, "block3_conv3")
    srgan = models.SRGAN(models.build_generator(2), models.build_discriminator(), models.ContentLoss(vgg))
    srgan.compile(d_optimizer=models.optimizer(), g_optimizer=models.optimizer())
    logs = _one_step(srgan, {"lr": lr, "hr": hr}, SR_BATCH)
    _check(srgan, logs, lr[:1])
    assert srgan.generator(lr[:1], training=False).shape == (1, 96, 96, 3)
    assert srgan.discriminator(hr[:1], training=False).dtype == "float32"  # the D head (sigmoid) stays float32 too


def test_gan_3d_with_the_discriminator_throttle_and_the_connectivity_term(mixed):
    from chapters.gan_3d import models

    gan = models.VoxelGAN(models.build_generator(32, width=1 / 64), models.build_discriminator(32, width=1 / 64),
                          d_acc_threshold=0.8, connectivity=25.0)
    d_optimizer, g_optimizer = models.optimizers(1e-3, 1e-4, 0.5, 0.5)
    gan.compile(d_optimizer=d_optimizer, g_optimizer=g_optimizer)
    volumes = (np.random.default_rng(0).uniform(size=(4, 32, 32, 32, 1)) > 0.5).astype(np.float32)
    logs = _one_step(gan, {"real": volumes})
    _check(gan, logs, np.zeros((1, 1, 1, 1, models.LATENT_DIM), np.float32))
    assert logs["d_updated"] in (0.0, 1.0)


def test_age_cgan_gan_stage(mixed):
    from chapters.age_cgan import models
    from common.gan import ConditionalGAN

    gan = ConditionalGAN(models.build_generator(width=0.0625), models.build_discriminator(width=0.0625),
                         models.LATENT_DIM, models.NUM_CLASSES)
    gan.compile(d_optimizer=models.optimizer(), g_optimizer=models.optimizer())
    labels = np.eye(models.NUM_CLASSES, dtype=np.float32)[[0, 3, 5, 1]]
    logs = _one_step(gan, {"real": _images(models.IMAGE_SHAPE), "labels": labels})
    _check(gan, logs, [_latent(models.LATENT_DIM), labels[:BATCH]])


@pytest.mark.parametrize("loss", ["logistic", "wgan-gp"])
def test_pgan_fade_in_step_in_bfloat16(loss):
    """The progressive GAN's step with either loss (fade-in to 8x8: the blend, the gradient penalty's double
    backward) under mixed_bfloat16: finite losses, bfloat16 blocks, images and scores leaving the networks in
    float32."""
    import keras
    import tensorflow as tf

    from chapters.pgan import models
    from chapters.pgan.phase import GrowthPhase

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        growing = models.Growing(latent_dim=8, max_level=1, max_filters=4)
        g, d = growing.generator(1, "fade"), growing.discriminator(1, "fade")
        phase = GrowthPhase(g, d, g, models.optimizer(), models.optimizer(), {}, True, tf.Variable(0.5), loss=loss)
        logs = _one_step(phase, {"real": _images((8, 8, 3))})
        _check(phase, logs, _latent(8))
        assert growing.g_blocks[1][1].compute_dtype == "bfloat16"  # the 8x8 block's first conv
        assert d(_images((8, 8, 3), count=2)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(before)


def test_pgan_trains_a_fade_in_in_bfloat16_and_resumes_in_float32_where_float16_was_asked(tmp_path, capsys,
                                                                                           monkeypatch):
    """A bfloat16 run through 4x4 and the 8x8 fade-in: finite losses, a generator.keras that loads in float32
    outputs; resumed with --mixed-precision where the device choice says float16 (a tensor-core GPU), the chapter
    trains on in float32 and says why in one line."""
    import csv

    import keras

    import common.devices
    from chapters.pgan import main as pgan
    from common.checkpoints import load_model

    run = tmp_path / "run"
    argv = ["--max-resolution", "8", "--stable-images", "8", "--fade-images", "8", "--tick-images", "8",
            "--batch-size", "4", "--batch-sizes", "", "--faces", "8", "--latent-dim", "8", "--max-filters", "4",
            "--stop-after-images", "16", "--precision", "bfloat16", "--run-dir", run]  # 4x4, then the fade
    assert run_main(pgan.main, argv) == 0
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    generator = load_model(run / "models" / "generator.keras", "")  # the fade's Gs
    assert generator(np.zeros((2, 8), "float32")).dtype == "float32"
    assert {layer.dtype_policy.name for layer in generator.layers} == {"mixed_bfloat16", "float32"}
    capsys.readouterr()
    monkeypatch.setattr(common.devices, "choose_precision", lambda *args, **kwargs: "float16")
    assert run_main(pgan.main, ["--resume", run, "--mixed-precision"]) == 0
    assert "trains in float32 or bfloat16, not float16" in capsys.readouterr().out
    assert keras.mixed_precision.global_policy().name == "float32"
    assert load_model(run / "models" / "generator.keras", "").compute_dtype == "float32"  # the 8x8 phase's
    with open(run / "history.csv", newline="") as history:
        rows = list(csv.DictReader(history))
    assert len(rows) == 3 and all(math.isfinite(float(row[name])) for row in rows
                                  for name in ("d_loss", "g_loss", "gradient_penalty")), rows


CPU_FLAGS = "processor : 0\nflags : fpu sse2 avx2 avx512f {extra}\n"


@pytest.mark.parametrize("requested,extra,chapter_ok,chosen", [
    ("auto", "", True, "float32"),                   # no native bfloat16: float32
    ("auto", "avx512_bf16", True, "bfloat16"),       # AVX512-BF16
    ("auto", "amx_bf16", True, "bfloat16"),          # AMX
    ("auto", "avx512_bf16", False, "float32"),       # a chapter whose results do not hold in bfloat16
    ("float16", "avx512_bf16", True, "float32"),     # float16 on a CPU is slower: refused with one line
    ("bfloat16", "", True, "bfloat16"),              # asked for explicitly: given
    ("float32", "avx512_bf16", True, "float32"),
])
def test_auto_precision_choice(requested, extra, chapter_ok, chosen):
    from common.devices import choose_precision

    said = []
    assert choose_precision(requested, [], said.append, chapter_ok, CPU_FLAGS.format(extra=extra)) == chosen
    if requested == "auto":
        assert len(said) == 1 and said[0].startswith(f"precision auto: {chosen}")


def test_a_bfloat16_run_resumes_in_float32(tmp_path, capsys):
    """Checkpoints hold float32 variables under either policy; outputs stay float32 under bfloat16."""
    import keras

    from chapters.anime_dcgan.main import main
    from common.checkpoints import load_model

    run = tmp_path / "run"
    tiny = ["--arch", "dcgan", "--filters", "4", "--faces", "32", "--batch-size", "8", "--steps-per-epoch", "2",
            "--latent-dim", "8", "--run-dir", run]
    assert run_main(main, [*tiny, "--epochs", "1", "--precision", "bfloat16"]) == 0
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    generator = load_model(run / "models" / "generator.keras", "")
    assert generator.compute_dtype == "bfloat16"
    assert generator.predict(np.zeros((2, 8), np.float32), verbose=0).dtype == np.float32
    capsys.readouterr()
    assert run_main(main, ["--resume", run, "--epochs", "2", "--precision", "float32"]) == 0
    assert "resumed" in capsys.readouterr().out
    assert keras.mixed_precision.global_policy().name == "float32"
    import json

    assert json.loads((run / "config.json").read_text())["precision"] == "float32"
    assert load_model(run / "models" / "generator.keras", "").compute_dtype == "float32"
