"""Chapter 5 (SRGAN): network shapes, the VGG19 content loss, tiling without seams, the data pipeline, a tiny
pretrain + train run with its evaluate and upscale stages, and bad input."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from chapters.srgan.main import main
from conftest import ROOT, run_main

SMALL_PHOTOS = str(ROOT / "tests" / "fixtures" / "srgan_held_out")  # 2 held-out photos cut small: fast epochs

TINY = ["--residual-blocks", "1", "--hr-size", "48", "--batch-size", "2", "--steps-per-epoch", "1", "--epochs", "1",
        "--pretrain-epochs", "1", "--content-loss", "mse", "--bicubic-skip", "--eval-data", SMALL_PHOTOS,
        "--arch", "paper"]  # the generator of make train-srgan


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


def test_the_papers_generator_uses_subpixel_convolutions_and_prelu_and_saves_safely(tmp_path):
    import keras

    from chapters.srgan import models
    from common.checkpoints import save_model

    generator = models.build_generator(residual_blocks=2, bicubic_skip=True, arch="paper")
    assert not [layer for layer in generator.layers if isinstance(layer, keras.layers.UpSampling2D)]
    assert [generator.get_layer(f"up{i}_conv").input.shape[1:] for i in range(2)] == [(None, None, 64)] * 2
    assert sum(isinstance(layer, keras.layers.PReLU) for layer in generator.layers) == 1 + 2 + 2
    assert generator.count_params() == models.parameter_count(2, discriminator=False, arch="paper")
    assert models.parameter_count(16, discriminator=False, arch="paper") == 1_554_883  # the paper's 1.55 M
    lr = np.random.default_rng(0).uniform(-1, 1, (2, 12, 20, 3)).astype(np.float32)
    np.testing.assert_allclose(generator(lr, training=False).numpy(), models.bicubic_upscale(lr).numpy(), atol=1e-6)
    tail = generator.get_layer("tail_conv")
    tail.kernel.assign(np.full(tail.kernel.shape, 1e-3, np.float32))
    sr = generator(lr, training=False).numpy()
    assert sr.shape == (2, 48, 80, 3)
    loaded = keras.saving.load_model(save_model(generator, tmp_path / "generator.keras"), safe_mode=True)
    np.testing.assert_allclose(loaded(lr, training=False).numpy(), sr, atol=1e-6)
    with pytest.raises(ValueError, match="unknown generator arch"):
        models.build_generator(arch="esrgan")


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

    from chapters.srgan.main import build_parser
    from chapters.srgan.stages import choose_content_loss
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
    from chapters.srgan.main import build_parser
    from chapters.srgan.stages import choose_content_loss
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

def test_the_subpixel_rewrite_is_the_books_upsampling_block():
    import keras
    import tensorflow as tf

    from chapters.srgan.inference import subpixel_kernel, upsample_conv

    x = np.random.default_rng(1).normal(size=(2, 7, 10, 5)).astype(np.float32)
    conv = keras.layers.Conv2D(6, 3, padding="same")
    books = conv(keras.layers.UpSampling2D(2)(x)).numpy()
    ours = upsample_conv(tf.constant(x), tf.constant(subpixel_kernel(conv.kernel.numpy())), conv.bias).numpy()
    assert ours.shape == books.shape == (2, 14, 20, 6)
    np.testing.assert_allclose(ours, books, atol=1e-5)


@pytest.mark.parametrize("bicubic_skip, arch", [(False, "book"), (True, "book"), (True, "paper")])
def test_tiled_upscaling_is_the_one_pass_result(bicubic_skip, arch, monkeypatch):
    import keras

    from chapters.srgan import models
    from chapters.srgan.inference import Upscaler
    from common.images import to_uint8

    generator = models.build_generator(residual_blocks=2, bicubic_skip=bicubic_skip, arch=arch)
    tail = generator.get_layer("tail_conv")  # the skip's tail starts at zero: make it draw something
    tail.kernel.assign(np.random.default_rng(3).normal(0, 0.05, tail.kernel.shape).astype(np.float32))
    for layer in generator.layers:  # PReLU starts as ReLU: give its negative side a slope
        if isinstance(layer, keras.layers.PReLU):
            layer.alpha.assign(np.full(layer.alpha.shape, 0.2, np.float32))
    lr = np.random.default_rng(2).uniform(-1, 1, (37, 53, 3)).astype(np.float32)
    whole = to_uint8(generator(lr[None], training=False).numpy()[0]).astype(int)
    upscaler = Upscaler(generator, tile=8)
    # 9x9 head, 2 blocks, body conv; the tail: book 1/2 + 1/4 + 1 LR pixels, paper 1 + 1/2 + 1
    assert (upscaler.body_margin, upscaler.tail_margin) == (4 + 2 * 2 + 1, 2 if arch == "book" else 3)
    monkeypatch.setattr(Upscaler, "band_rows", lambda self, width: 16)  # several body bands, as on a big photo
    tiled = upscaler(lr).astype(int)
    assert tiled.shape == whole.shape == (148, 212, 3)
    assert np.abs(tiled - whole).max() <= 1  # float rounding only: no seams, no blending
    assert np.mean(tiled != whole) < 0.01
    assert upscaler.tiles(37, 53) == 5 * 7


def test_a_generator_of_another_build_is_refused_by_name():
    import keras

    from chapters.srgan.inference import Upscaler

    plain = keras.Sequential([keras.Input((None, None, 3)), keras.layers.UpSampling2D(4)])
    with pytest.raises(ValueError, match="no layer 'body_skip'"):
        Upscaler(plain)


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
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for phase, graph in ((srgan_run / "pretrain", "generator"), (srgan_run, "generator_and_discriminator")):
        for name in ("models/generator.keras", "samples/epoch_0001.png", "history.csv", "checkpoints/checkpoint"):
            assert (phase / name).exists(), phase / name
        assert graph in EventAccumulator(str(phase / "logs" / "train")).Reload().Tags()["tensors"]
    assert (srgan_run / "models" / "discriminator.keras").exists()
    picture = np.asarray(Image.open(srgan_run / "samples" / "epoch_0001.png"))
    # the two held-out photos whole, at full size, one row each: bicubic | SR | original, labels above
    assert picture.shape == (14 + 72 + 4 + 64, 3 * 96 + 2 * 4, 3)
    cat = np.asarray(Image.open(SMALL_PHOTOS + "/chelsea_crop.png").convert("RGB"))
    np.testing.assert_array_equal(picture[14:14 + 72, 2 * (96 + 4):], cat)
    bicubic, sr = picture[14:14 + 72, :96].astype(int), picture[14:14 + 72, 100:196].astype(int)
    assert 0 < np.abs(sr - bicubic).mean() < 20  # the SR panel is the generator's: near bicubic after 1 step
    header = (srgan_run / "history.csv").read_text().splitlines()[0].split(",")
    for column in ("d_loss", "g_loss", "content_loss", "adversarial_loss", "d_real", "d_fake", "eval/psnr"):
        assert column in header
    assert "eval/psnr" in (srgan_run / "pretrain" / "history.csv").read_text()


def srgan_run_epochs(run_dir) -> int:
    return int((run_dir / "history.csv").read_text().splitlines()[-1].split(",")[0])


def test_evaluate_scores_bicubic_and_both_generators(srgan_run, capsys):
    import json

    assert run_main(main, ["--stage", "evaluate", "--run-dir", srgan_run]) == 0
    report = json.loads((srgan_run / "metrics.json").read_text())
    scores = report["metrics"]
    assert set(scores) == {f"{kind}_{method}" for kind in ("psnr", "ssim") for method in ("bicubic", "srgan", "srresnet")}
    assert 20 < scores["psnr_bicubic"] < 40 and 0 < scores["ssim_bicubic"] <= 1
    assert len(report["images"]) == 2 and report["epoch"] == srgan_run_epochs(srgan_run)
    out = capsys.readouterr().out
    assert "chelsea" in out and "psnr_srgan" in out and "written to" in out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(srgan_run / "logs" / "train")).Reload().Tags()["tensors"]
    assert {"eval/psnr_srgan", "eval/psnr_bicubic", "eval/ssim_srresnet"} <= set(tags)


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
                           tmp_path / "out", "--tile", "16"]) == 0
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


# --- pretrain, then train: the run's own flags and its pretrained generator ----------------------------------

TINY32 = [*TINY[:2], "--hr-size", "32", *TINY[4:]]


def _generator_weights(path) -> list[np.ndarray]:
    import keras

    import chapters.srgan.models  # noqa: F401  (BicubicResidual)

    return [w.numpy() for w in keras.saving.load_model(path, safe_mode=True, compile=False).weights]


@pytest.mark.parametrize("later", [["--stage", "train", "--run-dir"], ["--resume"]])
def test_train_after_pretrain_uses_the_runs_flags_and_starts_from_its_pretrained_generator(later, tmp_path,
                                                                                          monkeypatch, capsys):
    """The README's flow: `--stage pretrain ... --run-dir RUN`, then `--stage train --run-dir RUN` (or `--resume
    RUN`) with no other flag: the saved flags (32 px crops, bicubic skip) are used, the finished pretraining is
    not run again, and the adversarial phase starts from the pretrained weights."""
    import json

    import common.train
    from chapters.srgan.models import SRGAN, BicubicResidual

    run_dir = tmp_path / "run"
    assert run_main(main, [*TINY32, "--stage", "pretrain", "--run-dir", run_dir]) == 0
    pretrained = run_dir / "pretrain" / "models" / "generator.keras"
    saved, history = pretrained.read_bytes(), (run_dir / "pretrain" / "history.csv").read_text()
    starts, crops = [], []
    real_fit_gan = common.train.fit_gan

    def spy(gan, *args, **kwargs):
        if isinstance(gan, SRGAN):
            starts.append([w.numpy() for w in gan.generator.weights])
            crops.append(args[1].flags["hr_size"])
            assert kwargs["fresh_each_pass"]  # new random crops every epoch, not the first epoch's again
        return real_fit_gan(gan, *args, **kwargs)

    monkeypatch.setattr(common.train, "fit_gan", spy)
    capsys.readouterr()
    assert run_main(main, [*later, run_dir]) == 0
    out = capsys.readouterr().out
    assert f"{run_dir / 'pretrain'} has already trained its 1 epochs" in out, out
    assert f"run: {run_dir / 'pretrain'} " not in out  # no pretraining epoch ran
    assert pretrained.read_bytes() == saved and (run_dir / "pretrain" / "history.csv").read_text() == history
    assert len(starts) == 1
    for start, trained in zip(starts[0], _generator_weights(pretrained), strict=True):
        np.testing.assert_array_equal(start, trained)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["bicubic_skip"] is True and config["hr_size"] == 32 and config["content_loss"] == "mse"
    assert crops == [32]  # the adversarial phase ran on the run's 32 px crops
    assert (run_dir / "samples" / "epoch_0001.png").exists()
    import keras

    adversarial = keras.saving.load_model(run_dir / "models" / "generator.keras", safe_mode=True, compile=False)
    assert isinstance(adversarial.get_layer("sr"), BicubicResidual)
    assert (run_dir / "checkpoints" / "checkpoint").exists()


def test_resume_after_a_kill_during_pretraining_resumes_the_pretraining(tmp_path, capsys):
    import json

    run_dir = tmp_path / "run"
    assert run_main(main, [*TINY32, "--run-dir", run_dir, "--stage", "pretrain"]) == 0
    # as if the run had been started with 2 pretraining epochs and killed after the first one's checkpoint
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "pretrain_epochs": 2}))
    capsys.readouterr()
    assert run_main(main, ["--resume", run_dir]) == 0
    out = capsys.readouterr().out
    assert f"resumed {run_dir / 'pretrain'} at epoch 1" in out and "SRGAN training" in out, out
    assert len((run_dir / "pretrain" / "history.csv").read_text().splitlines()) == 1 + 2  # epochs 1 and 2
    assert (run_dir / "pretrain" / "checkpoints" / "ckpt-2.index").exists()
    assert (run_dir / "checkpoints" / "checkpoint").exists()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["pretrain_epochs"] == 2 and config["bicubic_skip"] is True and config["hr_size"] == 32


# --- upscaling: progress, interrupts, the one output rule --------------------------------------------------

@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    """An untrained one-block generator saved as .keras (upscaling does not need a trained one)."""
    from chapters.srgan import models
    from common.checkpoints import save_model

    return save_model(models.build_generator(residual_blocks=1, bicubic_skip=True),
                      tmp_path_factory.mktemp("generator") / "generator.keras")


def test_upscale_progress_shows_tiles_elapsed_and_eta():
    import io

    from chapters.srgan.images import Progress

    stream = io.StringIO()
    progress = Progress(10, "photo.png", stream, every=0.0, first_after=0.0)
    for _ in range(10):
        progress()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 9 and lines[0].startswith("photo.png: 1/10 tiles, 0:00:00 elapsed, ETA 0:00:0"), lines
    quiet = io.StringIO()  # a job shorter than `first_after` says nothing until its result line
    short = Progress(3, "x", quiet)
    for _ in range(3):
        short()
    assert quiet.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()  # on a terminal: a tqdm bar with done/total and elapsed<ETA
    bar = Progress(10, "photo.png", terminal)
    for _ in range(4):
        bar()
    bar.bar.refresh()  # tqdm redraws at most every 0.1 s
    bar.close()
    assert "4/10 [" in terminal.getvalue() and "tile/s]" in terminal.getvalue()


class _Lines:
    """A subprocess's stderr, read line by line in a thread (so that waiting for a line can time out)."""

    def __init__(self, process) -> None:
        import queue
        import threading

        self.process, self.queue, self.seen = process, queue.Queue(), []
        self.thread = threading.Thread(target=lambda: [self.queue.put(line) for line in process.stderr], daemon=True)
        self.thread.start()

    def until(self, text: str, timeout: float) -> str:
        """The first new line holding `text`, or "" when the process ended (or the time ran out) before."""
        import queue
        import time

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                self.seen.append(self.queue.get(timeout=0.5))
            except queue.Empty:
                if self.process.poll() is not None and not self.thread.is_alive() and self.queue.empty():
                    return ""
                continue
            if text in self.seen[-1]:
                return self.seen[-1]
        return ""

    def all(self) -> str:
        self.thread.join(timeout=30)
        while not self.queue.empty():
            self.seen.append(self.queue.get())
        return "".join(self.seen)


def test_sigterm_during_an_upscale_leaves_no_partial_file(tiny_generator, tmp_path):
    import signal
    import subprocess
    import sys

    from conftest import ROOT

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)).save(
        photos / "big.png")
    out = tmp_path / "new_folder"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "chapters/srgan/main.py"), "--stage", "upscale", "--generator",
         str(tiny_generator), "--input", str(photos / "big.png"), "--output", str(out / "big_x4.png"),
         "--tile", "32"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = _Lines(process)
    try:
        progress = stderr.until(" tiles, ", timeout=240)
        assert progress and process.poll() is None, f"no progress line before it exited {process.returncode}: " \
                                                    f"{stderr.all()[-2000:]}"
        assert "/1024 tiles, " in progress and " elapsed, ETA " in progress, progress  # 32 x 32 tiles
        assert list(photos.iterdir()) == [photos / "big.png"] and (out / ".big_x4.png.partial").exists()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
    text = stderr.all()
    assert process.returncode == 143, text[-2000:]
    assert "interrupted (SIGTERM)" in text and "--resume" not in text, text[-2000:]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["photos", "photos/big.png"]


def test_upscale_a_folder_twice_never_upscales_its_own_outputs(tiny_generator, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    rng = np.random.default_rng(8)
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (9, 14, 3), dtype=np.uint8)).save(folder / "more" / "b.jpg")
    args = ["--stage", "upscale", "--generator", tiny_generator, "--input", folder, "--output", folder]
    assert run_main(main, args) == 0
    names = ["a.png", "a_x4.png", "more/b.jpg", "more/b_x4.png"]
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.*")) == names
    capsys.readouterr()
    assert run_main(main, args) == 2  # its outputs are there: replacing them needs --overwrite
    line = _error_line(capsys)
    assert "a_x4.png already exists; pass --overwrite" in line and "(1 more of the outputs too)" in line, line
    before = (folder / "a_x4.png").stat().st_mtime_ns
    assert run_main(main, [*args, "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 file(s)" in out and "own outputs" in out, out
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.*")) == names  # no *_x4_x4.png
    assert (folder / "a_x4.png").stat().st_mtime_ns > before  # the originals were redone
    with Image.open(folder / "more" / "b_x4.png") as image:
        assert image.size == (56, 36)


def test_upscale_outputs_follow_the_one_output_rule(tiny_generator, tmp_path, capsys):
    source = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(source)
    (tmp_path / "a_folder").mkdir()
    base = ["--stage", "upscale", "--generator", tiny_generator, "--input", source]
    assert run_main(main, [*base, "--output", tmp_path / "a_folder"]) == 2  # a folder for one image
    assert "a_folder is a folder" in _error_line(capsys)
    for flags in ([], ["--overwrite"]):  # an input is never written over
        assert run_main(main, [*base, "--output", source, *flags]) == 2
        assert "is the input file" in _error_line(capsys)
    (tmp_path / "b.png").write_bytes(b"keep")
    assert run_main(main, ["--stage", "upscale", "--generator", tiny_generator, "--input", source, "--output",
                           tmp_path / "b.png"]) == 2
    assert "already exists; pass --overwrite" in _error_line(capsys)
    assert (tmp_path / "b.png").read_bytes() == b"keep" and list((tmp_path / "a_folder").iterdir()) == []
    two = tmp_path / "two"
    two.mkdir()
    for name in ("d.png", "d.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(two / name)
    assert run_main(main, ["--stage", "upscale", "--generator", tiny_generator, "--input", two]) == 2
    assert "would both be written to" in _error_line(capsys)


# --- models of the wrong kind, memory ------------------------------------------------------------------------

def test_a_generator_of_the_wrong_kind_or_a_damaged_file_is_one_sentence(tmp_path, capsys):
    import keras

    from chapters.srgan import models
    from common.checkpoints import save_model

    source = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(10).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(source)
    wrong = {
        "discriminator": models.build_discriminator(),
        "vanilla": keras.Sequential([keras.Input((16,)), keras.layers.Dense(8 * 8 * 3),
                                     keras.layers.Reshape((8, 8, 3))]),
        "same_size": keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 3, padding="same")]),
        "fixed_2x": keras.Sequential([keras.Input((20, 20, 3)), keras.layers.UpSampling2D(2)]),
    }
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(np.random.default_rng(11).bytes(5000))
    paths = [save_model(model, tmp_path / f"{name}.keras") for name, model in wrong.items()] + [damaged]
    run_dir = tmp_path / "run"  # evaluate writes its scores into a run
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"chapter": "srgan"}')
    for path in paths:
        for stage in (["--stage", "upscale", "--input", source, "--output", tmp_path / "out.png"],
                      ["--stage", "evaluate", "--run-dir", run_dir]):
            assert run_main(main, [*stage, "--generator", path]) == 2, (path, stage)
            line = _error_line(capsys)
            assert str(path) in line, line
            assert ("is not an SRGAN generator" if path != damaged else "is not a Keras model file") in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in paths] + ["photo.png", "run"])
    assert list(run_dir.iterdir()) == [run_dir / "config.json"]


def test_a_training_step_too_big_for_memory_is_refused_before_anything_is_built(tmp_path, capsys):
    import subprocess
    import sys
    import time

    from conftest import ROOT

    run_dir = tmp_path / "run"
    limit = "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30)); " \
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    started = time.time()  # (under a 12 GiB address-space limit: code that tried would fail, not swamp the machine)
    result = subprocess.run([sys.executable, "-c", limit, str(ROOT / "chapters/srgan/main.py"), "--hr-size", "100000",
                             "--run-dir", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: SRGAN training at --hr-size 100000"), lines
    assert " GiB for one training step" in lines[0] and "lower --hr-size or --batch-size" in lines[0]
    assert time.time() - started < 60 and not run_dir.exists()
    from chapters.srgan.main import build_parser
    from chapters.srgan.stages import check_memory, step_memory_bytes

    default_cpu_run = build_parser().parse_args(["--arch", "paper", "--hr-size", "48", "--batch-size", "4",
                                                 "--bicubic-skip"])
    check_memory(default_cpu_run, default_cpu_run.vgg_layer)  # the default CPU configuration passes
    assert 0.2 * 2 ** 30 < step_memory_bytes(default_cpu_run, "block3_conv3") < 2 * 2 ** 30


def test_help_lists_every_flag_with_help():
    from chapters.srgan.main import build_parser

    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, action.option_strings
        for flag in action.option_strings:
            assert flag in text
    assert isinstance(parser.parse_args([]), argparse.Namespace)
