"""Chapter 5 (SRGAN): network shapes, the VGG19 content loss, tiling without seams, the data pipeline, a tiny
pretrain + train run with its evaluate and upscale stages, and bad input."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from chapters.srgan.main import main
from conftest import run_main

TINY = ["--residual-blocks", "1", "--hr-size", "48", "--batch-size", "2", "--steps-per-epoch", "1", "--epochs", "1",
        "--pretrain-epochs", "1", "--val-crops", "2", "--content-loss", "mse", "--bicubic-skip"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- networks --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lr_side", [64, 24])
def test_networks_are_the_books_and_fully_convolutional(lr_side):
    from chapters.srgan import models

    generator = models.build_generator()
    discriminator = models.build_discriminator()
    hr_side = 4 * lr_side
    sr = generator(np.zeros((1, lr_side, lr_side, 3), np.float32), training=False)
    assert sr.shape == (1, hr_side, hr_side, 3)
    patches = discriminator(np.zeros((1, hr_side, hr_side, 3), np.float32), training=False)
    assert patches.shape == (1, hr_side // 16, hr_side // 16, 1)  # the book's 16x16 patch at 256
    assert 0.0 < float(np.min(patches)) and float(np.max(patches)) < 1.0  # sigmoid
    assert sum(1 for layer in generator.layers if layer.name.endswith("_add")) == 16
    assert [layer.momentum for layer in generator.layers if "bn" in layer.name][:2] == [0.8, 0.8]
    assert sum(1 for layer in generator.layers if "upsample" in layer.name) == 2
    per_block = 2 * (3 * 3 * 64 * 64 + 64) + 2 * 4 * 64  # two conv3 64 and two BN (4 weights per channel)
    expected = (9 * 9 * 3 * 64 + 64) + 16 * per_block + (3 * 3 * 64 * 64 + 64 + 4 * 64) \
        + (3 * 3 * 64 * 256 + 256) + (3 * 3 * 256 * 256 + 256) + (9 * 9 * 256 * 3 + 3)
    assert generator.count_params() == expected == 2_042_691  # the book's 2.04 M
    convs = [layer for layer in discriminator.layers if layer.name.endswith("_conv")]
    assert [c.filters for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.strides[0] for c in convs] == [1, 2] * 4
    assert discriminator.get_layer("dense").units == 1024


def test_bicubic_skip_starts_exactly_at_bicubic_and_saves_safely(tmp_path):
    import keras

    from chapters.srgan import models
    from common.checkpoints import save_model

    generator = models.build_generator(residual_blocks=2, bicubic_skip=True)
    lr = np.random.default_rng(0).uniform(-1, 1, (2, 12, 20, 3)).astype(np.float32)
    bicubic = models.bicubic_upscale(lr).numpy()
    np.testing.assert_allclose(generator(lr, training=False).numpy(), bicubic, atol=1e-6)
    tail = generator.get_layer("tail_conv")
    tail.kernel.assign(np.full(tail.kernel.shape, 1e-3, np.float32))  # a trained generator: no longer bicubic
    sr = generator(lr, training=False).numpy()
    assert np.abs(sr - bicubic).max() > 1e-3 and sr.min() >= -1 and sr.max() <= 1
    path = save_model(generator, tmp_path / "generator.keras")
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(lr, training=False).numpy(), sr, atol=1e-6)


# --- content loss ----------------------------------------------------------------------------------------

def test_vgg_sees_imagenet_pixels_not_raw_minus_one_to_one():
    import keras
    import tensorflow as tf

    from chapters.srgan.models import vgg_input

    white_black = tf.constant([[[[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]]])
    out = vgg_input(white_black).numpy()[0, 0]
    mean_bgr = np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(out[0], 255.0 - mean_bgr, atol=1e-3)  # BGR, 0..255, mean subtracted
    np.testing.assert_allclose(out[1], -mean_bgr, atol=1e-3)
    rgb = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3)).astype(np.float32)
    expected = keras.applications.vgg19.preprocess_input(rgb.copy())
    np.testing.assert_allclose(vgg_input(rgb / 127.5 - 1.0).numpy(), expected, atol=1e-3)
    assert np.abs(vgg_input(rgb / 127.5 - 1.0).numpy() - (rgb / 127.5 - 1.0)).max() > 50  # raw would fail


def test_vgg19_loads_from_a_weights_file_and_drives_the_content_loss(tmp_path):
    import keras

    from chapters.srgan.main import build_parser, choose_content_loss
    from chapters.srgan.models import vgg_input

    reference = keras.applications.VGG19(weights=None, include_top=False, input_shape=(None, None, 3))
    weights_file = tmp_path / "vgg19_notop.weights.h5"
    reference.save_weights(weights_file)
    args = build_parser().parse_args(["--vgg-weights", str(weights_file), "--vgg-layer", "block3_conv3"])
    lines = []
    content = choose_content_loss(args, log=lines.append)
    assert content.vgg is not None and "block3_conv3" in lines[0]
    for mine, theirs in zip(content.vgg.weights, reference.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    rng = np.random.default_rng(1)
    hr, sr = rng.uniform(-1, 1, (2, 3, 32, 32, 3)).astype(np.float32)
    features = keras.Model(reference.input, reference.get_layer("block3_conv3").output)
    expected = np.mean(((features(vgg_input(hr)) - features(vgg_input(sr))) / 12.75) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(content(hr, sr).numpy(), expected, rtol=1e-4)
    assert np.all(content(hr, hr).numpy() == 0)


def test_auto_content_loss_offline_falls_back_to_mse_in_one_line(tmp_path, monkeypatch, capsys):
    import common.pretrained
    from chapters.srgan.main import build_parser, choose_content_loss
    from common.errors import UserError

    monkeypatch.setattr(common.pretrained, "WEIGHTS_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    capsys.readouterr()
    content = choose_content_loss(build_parser().parse_args([]))
    assert content.vgg is None and content.name == "mse"
    notice = capsys.readouterr().out.strip().splitlines()
    assert len(notice) == 1 and notice[0].startswith("content loss:")
    assert "falling back to pixel MSE because no VGG19 weights are available" in notice[0]
    assert "--vgg-weights" in notice[0]
    with pytest.raises(UserError, match="--vgg-weights"):  # asked for VGG explicitly: no fallback
        choose_content_loss(build_parser().parse_args(["--content-loss", "vgg"]))


# --- tiling ----------------------------------------------------------------------------------------------

def test_tiles_cover_the_image_with_at_least_the_overlap():
    from chapters.srgan.images import tile_starts, window

    for length in (5, 16, 17, 40, 100, 1024):
        starts, size = tile_starts(length, 16, 4)
        assert starts[0] == 0 and starts[-1] + size == length
        assert all(b - a <= 16 - 4 for a, b in zip(starts, starts[1:]))
    w = window(64, True, True, 16)
    assert w[0] == 0 and w[32] == 1 and np.all(np.diff(w[:16]) >= 0)


def test_tiled_upscaling_blends_exactly_for_a_pixelwise_network():
    import keras

    from chapters.srgan.images import keras_generator, upscale_array

    pixelwise = keras.Sequential([keras.Input((None, None, 3)), keras.layers.UpSampling2D(4)])
    lr = np.random.default_rng(2).uniform(-1, 1, (37, 53, 3)).astype(np.float32)
    tiled = upscale_array(keras_generator(pixelwise), lr, tile=16, overlap=6)
    assert tiled.shape == (148, 212, 3)
    whole = upscale_array(keras_generator(pixelwise), lr, tile=64, overlap=0)
    np.testing.assert_array_equal(tiled, whole)


@pytest.mark.parametrize("kind", ["constant", "gradient"])
def test_tiled_upscaling_has_no_seams(kind):
    from chapters.srgan import models
    from chapters.srgan.images import keras_generator, upscale_array

    generator = keras_generator(models.build_generator(residual_blocks=2))
    height, width = 40, 56
    if kind == "constant":
        lr = np.full((height, width, 3), 0.3, np.float32)
    else:
        ramp = np.linspace(-0.8, 0.8, width, dtype=np.float32)
        lr = np.broadcast_to(ramp[None, :, None], (height, width, 3)) * np.array([1.0, 0.5, -0.7], np.float32)
    whole = upscale_array(generator, lr, tile=128, overlap=0).astype(int)
    tiled = upscale_array(generator, lr, tile=24, overlap=10).astype(int)
    assert tiled.shape == whole.shape == (160, 224, 3)
    assert np.abs(tiled - whole).max() <= 2  # uint8 levels: tiles blend into the one-piece result
    # no step where tiles meet: neighbouring columns/rows differ no more than anywhere in the one-piece image
    assert np.abs(np.diff(tiled, axis=1)).max() <= np.abs(np.diff(whole, axis=1)).max() + 2
    assert np.abs(np.diff(tiled, axis=0)).max() <= np.abs(np.diff(whole, axis=0)).max() + 2


# --- data ------------------------------------------------------------------------------------------------

def test_pipeline_crops_a_tiny_folder_with_a_corrupt_and_a_grey_image(tmp_path, capsys):
    from chapters.srgan.images import training_crops
    from chapters.srgan.models import downsample
    from common.data.stream import training_stream

    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    Image.fromarray(rng.integers(0, 256, (80, 90), dtype=np.uint8), mode="L").save(tmp_path / "grey.png")
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "small.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image at all")
    count, take = training_crops(tmp_path, 48, 2, seed=0)
    assert count == 6 and "skipped 1 of 4 image files (broken.png" in capsys.readouterr().out
    batches = training_stream(count, take, 6, seed=0)
    batch = next(iter(batches))
    assert batch["hr"].shape == (6, 48, 48, 3) and batch["lr"].shape == (6, 12, 12, 3)
    hr, lr = batch["hr"].numpy(), batch["lr"].numpy()
    assert hr.min() >= -1 and hr.max() <= 1 and lr.min() >= -1 and lr.max() <= 1
    greys = [i for i in range(6) if np.allclose(hr[i], hr[i, ..., :1])]  # R = G = B
    assert len(greys) == 2  # the grey image, decoded as RGB with R = G = B
    np.testing.assert_allclose(lr, downsample(hr).numpy(), atol=1 / 127.5 + 1e-6)  # bicubic 1/4, 8-bit levels
    again = next(iter(training_stream(count, take, 6, seed=0)))
    np.testing.assert_array_equal(again["hr"].numpy(), hr)  # crops are a function of (seed, index)


# --- end to end ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def srgan_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("srgan") / "run"
    assert run_main(main, [*TINY, "--run-dir", run_dir]) == 0
    return run_dir


def test_pretrain_then_train_writes_both_phases(srgan_run):
    for phase in (srgan_run / "pretrain", srgan_run):
        for name in ("models/generator.keras", "samples/epoch_0001.png", "history.csv", "checkpoints/checkpoint"):
            assert (phase / name).exists(), phase / name
        assert list((phase / "logs" / "train").glob("events.out.tfevents.*"))
    assert (srgan_run / "models" / "discriminator.keras").exists()
    strip = np.asarray(Image.open(srgan_run / "samples" / "epoch_0001.png"))
    assert strip.shape == (2 * 50 + 2, 4 * 50 + 2, 3)  # 2 crops x (LR | bicubic | SR | HR) of 48 + 2 gaps
    header = (srgan_run / "history.csv").read_text().splitlines()[0].split(",")
    for column in ("d_loss", "g_loss", "content_loss", "adversarial_loss", "d_real", "d_fake", "eval/psnr"):
        assert column in header
    assert "eval/psnr" in (srgan_run / "pretrain" / "history.csv").read_text()


def test_evaluate_scores_bicubic_and_both_generators(srgan_run, capsys):
    import json

    assert run_main(main, ["--stage", "evaluate", "--run-dir", srgan_run]) == 0
    scores = json.loads((srgan_run / "metrics.json").read_text())
    assert set(scores) >= {"bicubic", "srgan", "srresnet"}
    assert 20 < scores["bicubic"]["psnr"] < 40 and 0 < scores["bicubic"]["ssim"] <= 1
    assert "chelsea.png" in capsys.readouterr().out


def test_upscale_an_image_smaller_than_a_tile_and_refuse_to_overwrite(srgan_run, tmp_path, capsys):
    source = tmp_path / "tiny.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (9, 13), dtype=np.uint8), mode="L").save(source)
    out = tmp_path / "big.png"
    args = ["--stage", "upscale", "--run-dir", srgan_run, "--input", source, "--output", out]
    assert run_main(main, args) == 0
    with Image.open(out) as image:
        assert image.size == (52, 36) and image.mode == "RGB"
        image.load()  # the streamed PNG decodes
    assert run_main(main, args) == 2
    assert "already exists; pass --overwrite" in _error_line(capsys)
    assert run_main(main, [*args, "--overwrite"]) == 0


def test_upscale_a_folder_in_tiles(srgan_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (30, 41, 3), dtype=np.uint8)).save(folder / "a.jpg")
    assert run_main(main, ["--stage", "upscale", "--run-dir", srgan_run, "--input", folder, "--output",
                           tmp_path / "out", "--tile", "16", "--tile-overlap", "4"]) == 0
    with Image.open(tmp_path / "out" / "a_x4.png") as image:
        assert image.size == (164, 120)


def test_bad_upscale_inputs_are_one_sentence(srgan_run, tmp_path, capsys):
    unreadable = tmp_path / "photo.png"
    unreadable.write_text("this is not a picture")
    base = ["--stage", "upscale", "--run-dir", srgan_run]
    assert run_main(main, [*base, "--input", unreadable, "--output", tmp_path / "o.png"]) == 2
    assert "cannot be used: not a readable image" in _error_line(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos")
    assert run_main(main, [*base, "--input", empty]) == 2
    assert "contains no images" in _error_line(capsys)
    assert run_main(main, [*base, "--input", tmp_path / "missing.jpg"]) == 2
    assert "does not exist" in _error_line(capsys)


def test_resume_after_a_kill_during_pretraining_continues_the_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_main(main, [*TINY, "--run-dir", run_dir, "--stage", "pretrain"]) == 0
    assert not (run_dir / "checkpoints" / "checkpoint").exists()
    capsys.readouterr()
    assert run_main(main, ["--resume", run_dir, "--pretrain-epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "already trained 1 epochs" in out and "SRGAN training" in out
    assert (run_dir / "checkpoints" / "checkpoint").exists()


def test_help_lists_every_flag_with_help():
    from chapters.srgan.main import build_parser

    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, action.option_strings
        for flag in action.option_strings:
            assert flag in text
    assert isinstance(parser.parse_args([]), argparse.Namespace)
