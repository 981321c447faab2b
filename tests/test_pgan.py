"""Progressive GAN: the fade-in blends exactly, equalised LR survives save/load, growth resumes mid fade-in and
into a new phase with its trained layers, damaged checkpoints fall back, a step that cannot fit is refused."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chapters.pgan.main import main
from conftest import run_main, run_script

# 4x4 (64 images) -> 8x8 fade-in (128) -> 8x8 (64), batch 16, narrow networks: a few seconds of training.
TINY = ["--max-resolution", "8", "--stable-images", "64", "--fade-images", "8:128", "--tick-images", "32",
        "--batch-size", "16", "--batch-sizes", "4:16", "--faces", "96", "--latent-dim", "16", "--max-filters", "8",
        "--seed", "3"]


def _progress(run_dir: Path) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    return {name: reader.get_tensor(f"progress/{name}/.ATTRIBUTES/VARIABLE_VALUE")
            for name in ("phase", "resolution", "alpha", "phase_images", "total_images")}


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    return [w.numpy() for w in keras.models.load_model(path, safe_mode=True, compile=False).weights]


def _saved_layers(run_dir: Path) -> dict[str, list[np.ndarray]]:
    """The weights of models/generator.keras and discriminator.keras (the last finished phase) by layer name."""
    import keras

    import chapters.pgan.layers  # noqa: F401  registers the custom layers

    out = {}
    for name in ("generator", "discriminator"):
        model = keras.models.load_model(run_dir / "models" / f"{name}.keras", safe_mode=True, compile=False)
        out.update({layer.name: [w.numpy() for w in layer.weights] for layer in model.layers if layer.weights})
    return out


def _checkpoint_layers(run_dir: Path, level: int, restore: bool = True) -> dict[str, list[np.ndarray]]:
    """The layers of levels 0..level in the run's latest checkpoint by name (restore=False: a fresh init): D's,
    and G's average (what models/generator.keras holds)."""
    import tensorflow as tf

    from chapters.pgan.models import Growing

    config = json.loads((run_dir / "config.json").read_text())
    growing, average = (Growing(config["latent_dim"], level, config["max_filters"], 3, config["seed"])
                        for _ in range(2))
    layers = {**growing.layers_up_to(level), "average_layers": average.layers_up_to(level)["generator_layers"]}
    if restore:
        tf.train.Checkpoint(**layers).restore(tf.train.latest_checkpoint(str(run_dir / "checkpoints"))).expect_partial()
    return {name: [w.numpy() for w in layer.weights] for group in ("discriminator_layers", "average_layers")
            for name, layer in layers[group].items()}


def _assert_carried(saved: dict, carried: dict, fresh: dict) -> None:
    assert {"g_4x4_dense", "g_4x4_conv", "d_4x4_dense", "d_score"} <= set(saved)
    for name, weights in saved.items():
        for a, b in zip(weights, carried[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert not np.array_equal(saved["g_4x4_conv"][0], fresh["g_4x4_conv"][0])  # so the check above can fail


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("pgan") / "run"
    assert run_main(main, [*TINY, "--run-dir", run_dir]) == 0
    return run_dir


def test_fade_in_is_the_low_res_path_at_alpha_0_and_the_new_block_at_alpha_1():
    from chapters.pgan.models import Growing

    growing = Growing(latent_dim=16, max_level=2, max_filters=8, seed=1)
    z = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    paths = growing.fade_paths(2)  # 8x8 -> 16x16
    discriminator = growing.discriminator(2, "fade")
    image = np.random.default_rng(1).uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32)
    d_low = growing.discriminator(1, "stable")  # the old network on the downsampled image
    d_new = growing.discriminator(2, "stable")  # the new block's path at full alpha
    downsampled = image.reshape(8, 8, 2, 8, 2, 3).mean(axis=(2, 4))
    for alpha, which in ((0.0, 0), (1.0, 1)):
        for layer in growing.fade_layers(2):
            layer.alpha.assign(alpha)
        low, new, blend = (np.asarray(t) for t in paths(z))
        np.testing.assert_array_equal(blend, (low, new)[which])
        expected = np.asarray((d_low(downsampled), d_new(image))[which])
        np.testing.assert_allclose(np.asarray(discriminator(image)), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(low, new)  # two different paths, so the checks above can fail
    # The low path is the 8x8 generator's image, upsampled by nearest neighbour.
    small = np.asarray(growing.generator(1, "stable")(z))
    np.testing.assert_allclose(low, small.repeat(2, axis=1).repeat(2, axis=2), rtol=1e-5, atol=1e-5)
    for layer in growing.fade_layers(2):
        layer.alpha.assign(0.25)
    low, new, blend = (np.asarray(t) for t in paths(z))
    np.testing.assert_allclose(blend, 0.75 * low + 0.25 * new, rtol=1e-5, atol=1e-6)


def test_equalized_layers_have_unit_variance_weights_and_keep_their_scale_through_save_and_load(tmp_path):
    import keras

    from chapters.pgan.layers import EqualizedConv2D, EqualizedDense

    image = keras.Input((8, 8, 64))
    conv = EqualizedConv2D(128, 3, name="conv", seed=1)
    dense = EqualizedDense(256, name="dense", seed=2)
    model = keras.Model(image, dense(keras.layers.Flatten()(conv(image))))
    for layer, fan_in in ((conv, 3 * 3 * 64), (dense, 8 * 8 * 128)):
        kernel = layer.kernel.numpy()
        assert abs(kernel.std() - 1.0) < 0.02 and abs(kernel.mean()) < 0.02  # N(0, 1), not He-scaled
        assert layer.scale == pytest.approx(np.sqrt(2.0) / np.sqrt(fan_in))  # He's constant, applied at run time
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 64)).astype(np.float32)
    out = np.asarray(conv(x))
    assert 0.8 < out.std() / np.sqrt(2.0) < 1.2  # unit-variance input -> variance 2 (gain sqrt 2) at init
    model.save(tmp_path / "eq.keras")
    loaded = keras.models.load_model(tmp_path / "eq.keras", safe_mode=True, compile=False)
    assert loaded.get_layer("conv").scale == conv.scale and loaded.get_layer("dense").scale == dense.scale
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("loss", ["logistic", "wgan-gp"])
def test_a_phase_step_is_the_chosen_loss_with_its_gradient_penalty_and_d_follows_its_gradient(loss):
    """D(x) = sum_i w_i x_i^2 has the input gradient 2 w x, so every term of a step is known in closed form: R1
    and WGAN-GP's penalty at the images they are taken at (the fade-in's blend of the reals, and points between
    them and the fakes), and D's update by plain SGD, the penalty's second-order term included."""
    import keras
    import tensorflow as tf

    from chapters.pgan.phase import GrowthPhase

    rng = np.random.default_rng(0)
    z = keras.Input((3,))
    generator = keras.Model(z, keras.layers.Reshape((2, 2, 1))(keras.layers.Dense(4, use_bias=False)(z)))
    image = keras.Input((2, 2, 1))
    squares = keras.layers.Flatten()(keras.layers.Multiply()([image, image]))
    discriminator = keras.Model(image, keras.layers.Dense(1, use_bias=False)(squares))
    w = np.array([0.5, -1.5, 2.0, 0.25], np.float32)
    discriminator.set_weights([w[:, None]])
    g_kernel = rng.standard_normal((3, 4)).astype(np.float32)
    generator.set_weights([g_kernel])
    lr, gamma, gp_weight, drift = 0.05, 3.0, 10.0, 0.001
    phase = GrowthPhase(generator, discriminator, generator, keras.optimizers.SGD(0.0), keras.optimizers.SGD(lr),
                        items={}, fading=True, alpha=tf.Variable(0.25), loss=loss, r1_gamma=gamma,
                        gp_weight=gp_weight, drift=drift)
    phase.build_optimizers()
    batch = {"real": rng.uniform(-1, 1, (8, 2, 2, 1)).astype(np.float32),
             "z_d": rng.standard_normal((8, 3)).astype(np.float32),
             "z_g": rng.standard_normal((8, 3)).astype(np.float32),
             "eps": rng.uniform(0, 1, (8, 1, 1, 1)).astype(np.float32)}
    logs = {k: float(v) for k, v in phase.train_step({k: tf.constant(v) for k, v in batch.items()}).items()}

    x = batch["real"].reshape(8, 4)
    x = 0.75 * x.mean(axis=1, keepdims=True) + 0.25 * x  # the fade-in's blend: 2x2 pooled to 1x1 and back
    f = batch["z_d"] @ g_kernel
    real, fake = (x ** 2) @ w, (f ** 2) @ w
    if loss == "logistic":
        penalty = ((2 * w * x) ** 2).sum(axis=1).mean()
        d_loss = np.logaddexp(0, fake).mean() + np.logaddexp(0, -real).mean() + 0.5 * gamma * penalty
        grad = ((_sigmoid(fake)[:, None] * f ** 2).mean(0) - (_sigmoid(-real)[:, None] * x ** 2).mean(0)
                + 0.5 * gamma * (8 * w * x ** 2).mean(0))
    else:
        mixed = x + batch["eps"].reshape(8, 1) * (f - x)
        slope = np.sqrt(((2 * w * mixed) ** 2).sum(axis=1))
        penalty = ((slope - 1) ** 2).mean()
        d_loss = -(real.mean() - fake.mean()) + gp_weight * penalty + drift * (real ** 2).mean()
        grad = ((f ** 2).mean(0) - (x ** 2).mean(0) + drift * (2 * real[:, None] * x ** 2).mean(0)
                + gp_weight * (2 * (slope - 1)[:, None] * 4 * w * mixed ** 2 / slope[:, None]).mean(0))
    moved = w - lr * grad
    np.testing.assert_allclose(discriminator.get_weights()[0][:, 0], moved, rtol=1e-4, atol=1e-5)
    fake_g = ((batch["z_g"] @ g_kernel) ** 2) @ moved  # G's update is scored by the D just updated
    gap = "score_gap" if loss == "logistic" else "wasserstein"
    expected = {"d_loss": d_loss, "gradient_penalty": penalty, gap: real.mean() - fake.mean(),
                "real_score": real.mean(),
                "g_loss": np.logaddexp(0, -fake_g).mean() if loss == "logistic" else -fake_g.mean()}
    assert set(logs) == set(expected)
    for name, value in expected.items():
        assert logs[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    np.testing.assert_array_equal(generator.get_weights()[0], g_kernel)  # G's SGD has rate 0: its loss is read off


def test_minibatch_stddev_adds_exactly_one_feature_map():
    from chapters.pgan.layers import MinibatchStdDev

    x = np.random.default_rng(0).standard_normal((8, 4, 4, 5)).astype(np.float32)
    y = np.asarray(MinibatchStdDev(group_size=4)(x))
    assert y.shape == (8, 4, 4, 6)
    np.testing.assert_array_equal(y[..., :5], x)
    groups = x.reshape(4, 2, 4, 4, 5)  # image i is in group i % 2
    expected = np.sqrt(groups.var(axis=0) + 1e-8).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(y[:, 0, 0, 5], np.tile(expected, 4), rtol=1e-5)
    assert np.all(y[..., 5] == y[:, :1, :1, 5])  # constant over the map
    assert np.asarray(MinibatchStdDev(4)(x[:6])).shape == (6, 4, 4, 6)  # 6 % 4: one group of the whole batch


def test_a_tiny_growth_run_4_to_8_writes_grids_strip_models_and_tensorboard(tiny_run):
    samples = tiny_run / "samples"
    for name in ("00_4x4_stable.png", "01_8x8_fade.png", "02_8x8_stable.png", "8x8_fade_strip_alpha0.50.png"):
        assert (samples / name).exists(), name
    grid = np.asarray(Image.open(samples / "02_8x8_stable.png"))
    assert grid.shape == (8 * 34 + 2, 8 * 34 + 2, 3) and grid.std() > 5  # 64 images enlarged 4x to 32 px
    strip = np.asarray(Image.open(samples / "8x8_fade_strip_alpha0.50.png"))
    assert strip.shape == (3 * 66 + 2, 8 * 66 + 2, 3)  # rows: low-res path, new block, blend
    phases = json.loads((tiny_run / "phases.json").read_text())
    assert [(p["resolution"], p["phase"], p["images"]) for p in phases["phases"]] == [
        (4, "stable", 64), (8, "fade", 128), (8, "stable", 64)]
    import tensorflow as tf

    # 2 + 4 + 2 checkpoints (a tick of 32 images each), numbered on across the phases
    assert tf.train.latest_checkpoint(str(tiny_run / "checkpoints")).endswith("ckpt-8")
    progress = _progress(tiny_run)
    assert progress["resolution"] == 8 and progress["phase"] == 2 and progress["total_images"] == 256
    import keras

    generator = keras.models.load_model(tiny_run / "models" / "generator.keras", safe_mode=True, compile=False)
    assert generator.output_shape == (None, 8, 8, 3)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tiny_run / "logs" / "train"), size_guidance={"tensors": 0})  # every phase's file
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"progress/alpha", "progress/resolution", "progress/images_per_second", "d_loss", "g_loss"} <= tags
    resolutions = [float(tf.make_ndarray(event.tensor_proto)) for event in events.Tensors("progress/resolution")]
    assert resolutions == [4.0] * 2 + [8.0] * 6  # a row per tick: numbered on across the phases
    history = (tiny_run / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == [str(tick) for tick in range(1, 9)]


def test_resume_in_the_middle_of_a_fade_in_restores_alpha_and_resolution(tmp_path, capsys):
    # float32: in bfloat16 (--precision auto on a CPU with native bfloat16) the split and the unbroken run
    # differed by up to 1.5e-3 in 2 of about 10 full `make test` runs on a busy 2-core machine
    tiny = [*TINY, "--precision", "float32"]
    whole, run_dir = tmp_path / "whole", tmp_path / "split"
    assert run_main(main, [*tiny, "--run-dir", whole]) == 0
    # 64 images at 4x4, then 64 of the 128-image 8x8 fade-in: stop at alpha 0.5.
    assert run_main(main, [*tiny, "--run-dir", run_dir, "--stop-after-images", "128"]) == 0
    progress = _progress(run_dir)
    assert progress["resolution"] == 8 and progress["phase"] == 1
    assert progress["phase_images"] == 64 and progress["alpha"] == pytest.approx(0.5)
    assert not (run_dir / "samples" / "01_8x8_fade.png").exists()
    capsys.readouterr()
    assert run_main(main, ["--resume", run_dir]) == 0
    out = capsys.readouterr().out
    assert "resumed" in out and "8x8 fade-in (8x8), alpha 0.500, 64 of 128 images" in out
    assert _progress(run_dir)["total_images"] == 256
    # Data order and noise are functions of (seed, step): the split run ends where the unbroken one did.
    for a, b in zip(_weights(whole / "models" / "generator.keras"), _weights(run_dir / "models" / "generator.keras")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert run_main(main, ["--resume", run_dir]) == 0
    assert "finished growing" in capsys.readouterr().out


def test_a_nan_loss_stops_with_exit_3_and_keeps_the_last_good_checkpoint_and_models(tmp_path, capsys, monkeypatch):
    from chapters.pgan.training import TrainingData
    import tensorflow as tf

    run_dir = tmp_path / "nan"
    assert run_main(main, [*TINY, "--run-dir", run_dir, "--stop-after-images", "64"]) == 0  # 4x4 done
    good = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    number = int(good.rsplit("-", 1)[1])
    saved = (run_dir / "models" / "generator.keras").read_bytes()
    real_take = TrainingData.take

    def poisoned(self, res):
        count, _ = real_take(self, res)
        return count, lambda index: {"real": tf.fill((res, res, 3), float("nan"))}

    monkeypatch.setattr(TrainingData, "take", poisoned)
    capsys.readouterr()
    assert run_main(main, ["--resume", run_dir]) == 3
    err = capsys.readouterr().err
    assert "training stopped: d_loss became nan in epoch 3, step 1" in err and f"Last good checkpoint: {good}." in err
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")) == good
    assert not (run_dir / "checkpoints" / f"ckpt-{number + 1}.index").exists()
    assert (run_dir / "models" / "generator.keras").read_bytes() == saved
    assert _progress(run_dir)["total_images"] == 64


def test_a_full_disk_mid_growth_is_one_sentence_and_the_run_resumes_from_the_last_checkpoint(tmp_path, capsys,
                                                                                             monkeypatch):
    import tensorflow as tf

    run_dir = tmp_path / "full"
    assert run_main(main, [*TINY, "--run-dir", run_dir, "--stop-after-images", "64"]) == 0
    good = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))

    def full_disk(self, prefix, options=None):  # how TensorFlow's writer fails on a full disk, half a file left
        Path(prefix + ".data-00000-of-00001").write_bytes(b"\0" * 100)
        raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}: No space left on device")

    original = tf.train.Checkpoint._write
    monkeypatch.setattr(tf.train.Checkpoint, "_write", full_disk)
    capsys.readouterr()
    assert run_main(main, ["--resume", run_dir]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not save epoch 3 ")  # a tick is an epoch of fit()
    assert "No space left on device" in err[0] and good in err[0] and f"--resume {run_dir}" in err[0]
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")) == good
    monkeypatch.setattr(tf.train.Checkpoint, "_write", original)
    assert run_main(main, ["--resume", run_dir]) == 0
    assert _progress(run_dir)["total_images"] == 256


def test_sample_and_explore_stages_use_the_saved_generator(tiny_run, tmp_path):
    out = tmp_path / "grid.png"
    result = run_script("chapters/pgan/main.py", "--stage", "sample", "--run-dir", tiny_run, "--num", "16",
                        "--out", out)  # a fresh process: the custom layers load with safe_mode=True
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.asarray(Image.open(out)).shape == (4 * 10 + 2, 4 * 10 + 2, 3)
    assert run_main(main, ["--stage", "explore", "--run-dir", tiny_run, "--walk-seeds", "3", "4", "--walk-steps", "5", "--sweep-dims", "0",
                           "--sweep-steps", "3", "--sweep-rows", "2", "--interpolate-steps", "3"]) == 0
    gif = tiny_run / "explore" / "walk_3_4.gif"
    with Image.open(gif) as animation:
        assert animation.n_frames == 8  # 3 -> 4 in 5 points and back, without repeating the start
    assert (tiny_run / "explore" / "walk_3_4.png").exists()


def test_image_counts_per_resolution_and_the_average_generator(tiny_run):
    from chapters.pgan.main import build_parser
    from chapters.pgan.schedule import phase_images

    args = build_parser().parse_args(["--fade-images", "500,16:900", "--stable-images", "700"])
    assert [phase_images(args, "fade", r) for r in (8, 16, 32)] == [500, 900, 500]
    assert phase_images(args, "stable", 4) == 700
    # models/generator.keras is Gs, the average of G's weights (checkpointed with G): not G itself
    import tensorflow as tf

    from chapters.pgan.models import Growing

    growing = Growing(16, 1, 8, 3, 3)
    layers = growing.layers_up_to(1)["generator_layers"]
    tf.train.Checkpoint(generator_layers=layers).restore(
        tf.train.latest_checkpoint(str(tiny_run / "checkpoints"))).expect_partial()
    average, raw = _saved_layers(tiny_run)["g_8x8_conv1"][0], layers["g_8x8_conv1"].weights[0].numpy()
    assert average.shape == raw.shape and not np.array_equal(average, raw)
    assert np.abs(average - raw).mean() < np.abs(raw).mean()


def test_bad_flags_are_one_sentence(tmp_path, capsys):
    assert run_main(main, ["--max-resolution", "48", "--run-dir", tmp_path / "r"]) == 2
    assert "power of two" in capsys.readouterr().err
    assert run_main(main, ["--batch-sizes", "8-16", "--run-dir", tmp_path / "r"]) == 2
    assert "RES:N" in capsys.readouterr().err
    assert run_main(main, ["--fade-images", "8:100,6:100", "--run-dir", tmp_path / "r"]) == 2
    assert "RES:N pairs" in capsys.readouterr().err
    assert run_main(main, ["--stable-images", "4:100,8:100", "--run-dir", tmp_path / "r"]) == 2
    assert "no count for 16x16" in capsys.readouterr().err
    assert run_main(main, ["--data", tmp_path / "missing"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_main(main, ["--strategy", "multiworker", "--run-dir", tmp_path / "r"]) == 2
    assert "one machine" in capsys.readouterr().err and not (tmp_path / "r").exists()
    # a flag of the other loss would do nothing: an error, not a silent no-op
    assert run_main(main, [*TINY, "--loss", "wgan-gp", "--r1-gamma", "5", "--run-dir", tmp_path / "r"]) == 2
    assert "--r1-gamma only acts under --loss logistic" in capsys.readouterr().err
    assert run_main(main, [*TINY, "--gp-weight=5", "--drift", "0", "--run-dir", tmp_path / "r"]) == 2
    assert "--gp-weight and --drift only act under --loss wgan-gp" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_growing_a_finished_run_carries_its_trained_layers_into_the_new_phase(tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "grow"
    shutil.copytree(tiny_run, run_dir)
    saved = _saved_layers(run_dir)  # 8x8 stable: the 4x4 and 8x8 blocks
    capsys.readouterr()
    # --stop-after-images at the images shown so far: a checkpoint at the start of the 16x16 fade-in, then stop
    assert run_main(main, ["--resume", run_dir, "--max-resolution", "16", "--fade-images", "8", "--stable-images", "8",
                           "--stop-after-images", "256"]) == 0
    progress = _progress(run_dir)
    assert progress["phase"] == 3 and progress["resolution"] == 16 and progress["total_images"] == 256
    _assert_carried(saved, _checkpoint_layers(run_dir, 2), _checkpoint_layers(run_dir, 2, restore=False))
    out = capsys.readouterr().out
    assert "the trained layers of 4x4 to 8x8 go on into 16x16 fade-in with a fresh Adam" in out
    # the resume succeeded, so the flags typed now are the run's (config.json is rewritten only then)
    assert json.loads((run_dir / "config.json").read_text())["max_resolution"] == 16


def test_a_run_killed_in_a_new_phase_before_its_first_checkpoint_resumes_with_the_trained_layers(
        tmp_path, capsys, monkeypatch):
    import chapters.pgan.phase as phase

    run_dir = tmp_path / "killed"
    real_phase = phase.GrowthPhase

    class KilledAt8x8(real_phase):  # a kill (Ctrl-C, SIGTERM) as the 8x8 fade-in starts
        def __init__(self, generator, *rest, **kwargs):
            if generator.output_shape[1] == 8:
                raise KeyboardInterrupt
            super().__init__(generator, *rest, **kwargs)

    monkeypatch.setattr(phase, "GrowthPhase", KilledAt8x8)
    assert run_main(main, [*TINY, "--run-dir", run_dir]) == 130
    monkeypatch.setattr(phase, "GrowthPhase", real_phase)
    progress = _progress(run_dir)  # the last checkpoint is the 4x4 phase's end
    assert progress["phase"] == 0 and progress["phase_images"] == 64 and progress["total_images"] == 64
    saved = _saved_layers(run_dir)  # 4x4 stable
    capsys.readouterr()
    assert run_main(main, ["--resume", run_dir, "--stop-after-images", "64"]) == 0
    assert _progress(run_dir)["phase"] == 1
    _assert_carried(saved, _checkpoint_layers(run_dir, 1), _checkpoint_layers(run_dir, 1, restore=False))
    assert "the trained layers of 4x4 go on into 8x8 fade-in" in capsys.readouterr().out


def test_runs_saved_before_the_loss_flag_grow_on_with_wgan_gp(tiny_run, tmp_path, capsys):
    import csv

    run_dir = tmp_path / "older"
    shutil.copytree(tiny_run, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["loss"], config["r1_gamma"]) == ("logistic", 1.0)  # the default
    del config["loss"], config["r1_gamma"]  # what a run saved before the flags existed holds
    (run_dir / "config.json").write_text(json.dumps(config))
    assert run_main(main, ["--resume", run_dir, "--r1-gamma", "2"]) == 2  # the run's loss decides
    assert "this run trains with --loss wgan-gp" in capsys.readouterr().err
    assert run_main(main, ["--resume", run_dir, "--max-resolution", "16", "--fade-images", "16",
                           "--stable-images", "16"]) == 0
    with open(run_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["score_gap"] and not rows[0]["wasserstein"]  # the tiny run's ticks: the logistic loss
    assert rows[-1]["wasserstein"] and not rows[-1]["score_gap"]  # the 16x16 ticks: the paper's WGAN-GP
    assert json.loads((run_dir / "config.json").read_text())["loss"] == "wgan-gp"


def test_resume_skips_an_empty_state_file_and_a_cut_short_checkpoint_or_says_none_is_usable(tiny_run, tmp_path,
                                                                                             capsys):
    run_dir = tmp_path / "cut"
    shutil.copytree(tiny_run, run_dir)
    checkpoints = run_dir / "checkpoints"
    (checkpoints / "checkpoint").write_text("")  # a state file emptied by a crash
    capsys.readouterr()
    assert run_main(main, ["--resume", run_dir]) == 0  # ckpt-8, the finished run, is found by its file name
    assert "finished growing" in capsys.readouterr().out
    data = checkpoints / "ckpt-8.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])  # the newest checkpoint cut short
    assert run_main(main, ["--resume", run_dir]) == 0
    captured = capsys.readouterr()
    damaged = [line for line in captured.out.splitlines() if "is damaged" in line]
    assert len(damaged) == 1 and "ckpt-8 is damaged" in damaged[0] and "resumed from ckpt-7" in damaged[0]
    assert "8x8 stabilise (8x8), alpha 1.000, 32 of 64 images" in captured.out and not captured.err
    assert _progress(run_dir)["total_images"] == 256  # trained the last 32 images again and wrote ckpt-8 anew
    config = (run_dir / "config.json").read_bytes()
    for index in checkpoints.glob("ckpt-*.index"):
        index.write_bytes(b"not a checkpoint index")
    assert run_main(main, ["--resume", run_dir]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: no usable checkpoint in {checkpoints}") and "ckpt-8" in err[0]
    assert (run_dir / "config.json").read_bytes() == config


def test_config_json_changes_only_when_a_resume_succeeds(tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "config"
    shutil.copytree(tiny_run, run_dir)
    before = (run_dir / "config.json").read_bytes()
    capsys.readouterr()
    assert run_main(main, ["--resume", run_dir, "--latent-dim", "32"]) == 2  # the run's networks take 16
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit these models" in err[0]
    assert (run_dir / "config.json").read_bytes() == before
    assert run_main(main, ["--resume", run_dir, "--tick-images", "64"]) == 0
    assert json.loads((run_dir / "config.json").read_text())["tick_images"] == 64


def test_a_step_that_cannot_fit_in_memory_is_refused_before_anything_is_built(tmp_path, capsys, monkeypatch):
    from chapters.pgan.training import TrainingData

    def built(*args, **kwargs):
        raise AssertionError("the training images were rendered before the memory check")

    monkeypatch.setattr(TrainingData, "from_args", built)
    run_dir = tmp_path / "huge"
    assert run_main(main, ["--max-resolution", "1024", "--max-filters", "512", "--batch-sizes", "1024:64",
                           "--run-dir", run_dir]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training at 1024x1024 (batch 64" in err[0] and " GiB " in err[0]
    assert "--batch-sizes 1024:N" in err[0] and not run_dir.exists()
    from chapters.pgan.main import build_parser
    from chapters.pgan.schedule import memory_estimate
    from common.memory import machine_memory_bytes

    estimate = memory_estimate(build_parser().parse_args([]))[0]  # the default 32x32 run
    assert 0.3 * 2 ** 30 < estimate < min(machine_memory_bytes(), 2 ** 30)


def test_a_phases_grid_models_and_record_are_written_before_its_last_checkpoint(tmp_path, monkeypatch):
    """A kill right after a phase's last checkpoint must not lose the phase's outputs: a resume from that checkpoint
    goes on into the next phase and never writes them again."""
    from common.checkpoints import Checkpoints

    run_dir, seen = tmp_path / "order", {}
    real_save = Checkpoints.save

    def save(self, epoch):
        written = [*(run_dir / "samples").glob("0*.png"), *(run_dir / "models").glob("*.keras"),
                   *run_dir.glob("phases.json")]
        seen[epoch] = sorted(path.name for path in written)
        return real_save(self, epoch)

    monkeypatch.setattr(Checkpoints, "save", save)
    assert run_main(main, [*TINY, "--run-dir", run_dir, "--stop-after-images", "64"]) == 0  # the 4x4 phase: 2 ticks
    assert seen[1] == [] and seen[2] == ["00_4x4_stable.png", "discriminator.keras", "generator.keras", "phases.json"]
