"""Chapter 1 end to end: train, resume exactly, sample in a fresh process, refuse bad input (SIGKILL: test_killed_runs)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chapters.vanilla_gan.main import main
from conftest import ROOT, TINY_VANILLA, run_main, run_script

SCRIPT = "chapters/vanilla_gan/main.py"


def _generator_weights(run_dir: Path) -> list[np.ndarray]:
    import keras

    model = keras.models.load_model(run_dir / "models" / "generator.keras", safe_mode=True, compile=False)
    return [w.numpy() for w in model.weights]


def _latest_checkpoint_number(run_dir: Path) -> int:
    import tensorflow as tf

    return int(tf.train.latest_checkpoint(str(run_dir / "checkpoints")).rsplit("-", 1)[1])


def test_a_run_writes_its_whole_run_directory(vanilla_run):
    for name in ("config.json", "history.csv", "loss.png", "samples/epoch_0001.png", "samples/epoch_0002.png",
                 "models/generator.keras", "models/discriminator.keras", "checkpoints/checkpoint"):
        assert (vanilla_run / name).exists(), name
    assert list((vanilla_run / "logs" / "train").glob("events.out.tfevents.*"))
    grid = np.asarray(Image.open(vanilla_run / "samples" / "epoch_0002.png"))
    assert grid.shape == (8 * 30 + 2, 8 * 30 + 2)  # 64 digits of 28x28, 2-pixel gaps
    assert grid.std() > 10  # a picture, not a blank
    assert _latest_checkpoint_number(vanilla_run) == 2


def test_resume_continues_exactly_where_an_unbroken_run_would_be(tmp_path):
    assert run_main(main, [*TINY_VANILLA, "--run-dir", tmp_path / "straight", "--seed", "5"]) == 0
    one = [*TINY_VANILLA[2:], "--epochs", "1", "--seed", "5"]
    assert run_main(main, [*one, "--run-dir", tmp_path / "split"]) == 0
    assert run_main(main, ["--resume", tmp_path / "split", "--epochs", "2"]) == 0
    for a, b in zip(_generator_weights(tmp_path / "straight"), _generator_weights(tmp_path / "split")):
        np.testing.assert_array_equal(a, b)
    history = (tmp_path / "split" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]


def test_a_resume_and_evaluate_read_the_digits_the_run_trained_on(tmp_path, monkeypatch):
    import common.evaluate
    import common.train

    digits = np.random.default_rng(0).integers(0, 256, (48, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=digits)
    run_dir = tmp_path / "run"
    assert run_main(main, [*TINY_VANILLA[2:], "--epochs", "1", "--data", tmp_path / "mnist.npz",
                           "--run-dir", run_dir]) == 0
    counts = []
    monkeypatch.setattr(common.train, "fit_gan", lambda gan, run, schedule, strategy, count, *a, **k: counts.append(count))
    assert run_main(main, ["--resume", run_dir, "--epochs", "2"]) == 0
    monkeypatch.setattr(common.evaluate, "GeneratorScore", lambda real, *a: counts.append(len(real)))
    monkeypatch.setattr(common.evaluate, "evaluate_stage", lambda *a: None)
    assert run_main(main, ["--stage", "evaluate", "--run-dir", run_dir]) == 0
    assert counts == [48, 48]  # the run's 48 digits, not the 8,000 embedded ones


def test_resume_of_a_finished_run_says_how_to_go_on(vanilla_run, capsys):
    assert run_main(main, ["--resume", vanilla_run]) == 0
    assert "pass --epochs N" in capsys.readouterr().out


def test_sample_stage_loads_the_saved_generator_in_a_fresh_process(vanilla_run, tmp_path):
    out = tmp_path / "grid.png"
    result = run_script(SCRIPT, "--stage", "sample", "--run-dir", vanilla_run, "--num", "16", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    grid = np.asarray(Image.open(out))
    assert grid.shape == (4 * 30 + 2, 4 * 30 + 2)


def test_help_explains_every_flag():
    result = run_script(SCRIPT, "--help", timeout=60)
    assert result.returncode == 0
    from chapters.vanilla_gan import main as chapter
    import argparse

    captured = {}
    original = argparse.ArgumentParser.parse_args
    try:  # catch the parser main() builds, to list its flags
        argparse.ArgumentParser.parse_args = lambda self, *a, **k: captured.setdefault("p", self) and exit(0)
        with pytest.raises(SystemExit):
            chapter.main([])
    finally:
        argparse.ArgumentParser.parse_args = original
    for action in captured["p"]._actions:
        for flag in action.option_strings:
            assert flag in result.stdout
        assert action.help, f"{action.option_strings} has no help text"


# --- bad input --------------------------------------------------------------------------------------------

def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_missing_data_path_is_one_sentence_and_exit_2(tmp_path, capsys):
    assert run_main(main, ["--data", tmp_path / "nope", "--runs-root", tmp_path / "runs"]) == 2
    assert "does not exist" in _error_line(capsys)
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made


def test_npz_without_x_train_names_what_it_found(tmp_path, capsys):
    np.savez(tmp_path / "wrong.npz", images=np.zeros((3, 28, 28), np.uint8))
    assert run_main(main, ["--data", tmp_path / "wrong.npz"]) == 2
    line = _error_line(capsys)
    assert "no x_train" in line and "images" in line


def test_folder_without_images_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no digits here")
    assert run_main(main, ["--data", tmp_path]) == 2
    assert "contains no images" in _error_line(capsys)


def test_user_error_in_a_real_process_has_no_traceback(tmp_path):
    result = run_script(SCRIPT, "--data", tmp_path / "missing.npz", timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().startswith("error: ")


def test_a_corrupt_image_among_good_ones_is_skipped_and_counted(tmp_path, capsys):
    from common.data.mnist import load_digits

    digits = np.load(ROOT / "datasets" / "mnist_8k.npz")["x"][:5]
    for i, digit in enumerate(digits):
        Image.fromarray(digit).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    loaded = load_digits(tmp_path)
    np.testing.assert_array_equal(loaded, digits)
    assert "skipped 1 of 6 image files (broken.png" in capsys.readouterr().out


@pytest.mark.parametrize("form", ["keras-npz", "idx", "idx-gz"])
def test_mnist_in_the_forms_users_have_it(tmp_path, form):
    from common.data.mnist import load_digits

    digits = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    if form == "keras-npz":
        np.savez(tmp_path / "mnist.npz", x_train=digits, y_train=np.zeros(7), x_test=digits[:2])
        path = tmp_path / "mnist.npz"
    else:
        header = (2051).to_bytes(4, "big") + (7).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        data = header + digits.tobytes()
        if form == "idx":
            (tmp_path / "train-images-idx3-ubyte").write_bytes(data)
        else:
            (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data))
        path = tmp_path
    np.testing.assert_array_equal(load_digits(path), digits)


def test_truncated_idx_file_is_refused(tmp_path):
    from common.data.mnist import load_digits
    from common.errors import UserError

    header = (2051).to_bytes(4, "big") + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + b"\0" * 50)
    with pytest.raises(UserError, match="truncated"):
        load_digits(tmp_path)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    import tensorflow as tf

    from chapters.vanilla_gan import models
    from common.cli import base_parser
    from common.errors import TrainingDiverged
    from common.gan import GAN
    from common.run import Run
    from common.train import Schedule, fit_gan

    run_dir = tmp_path / "nan"
    assert run_main(main, [*TINY_VANILLA[2:], "--epochs", "1", "--run-dir", run_dir]) == 0
    saved = (run_dir / "models" / "generator.keras").read_bytes()
    args = base_parser("vanilla_gan", "", ("train",)).parse_args(
        ["--resume", str(run_dir), "--epochs", "2", *TINY_VANILLA[2:]])
    gan = GAN(models.build_generator(), models.build_discriminator(), 100)
    gan.compile(models.optimizer(), models.optimizer())
    poisoned = lambda index: {"real": tf.fill((28, 28, 1), float("nan"))}  # noqa: E731
    with pytest.raises(TrainingDiverged, match="d_loss became nan in epoch 2.*ckpt-1"):
        fit_gan(gan, Run(run_dir), Schedule.from_args(args), tf.distribute.get_strategy(), 100, poisoned, log=lambda _: None)
    assert _latest_checkpoint_number(run_dir) == 1
    assert not (run_dir / "checkpoints" / "ckpt-2.index").exists()
    assert (run_dir / "models" / "generator.keras").read_bytes() == saved


def test_evaluate_stage_scores_the_saved_generator_and_names_the_extractor(vanilla_run, capsys):
    """A generator trained for 8 steps must score far from real digits: the scores can fail."""
    import json

    assert run_main(main, ["--stage", "evaluate", "--run-dir", vanilla_run, "--eval-samples", "300"]) == 0
    report = json.loads((vanilla_run / "metrics.json").read_text())
    scores = report["metrics"]
    assert report["extractor"] == "mnist_cnn" and report["samples"] == 300 and report["epoch"] == 2
    assert {"fid_mnist_cnn", "kid_mnist_cnn", "is_mnist_cnn", "classes_covered_mnist_cnn"} <= set(scores)
    assert not any(key.startswith("fid_") and "mnist" not in key for key in scores)  # never mixed extractors
    # Real held-out digits score FID 3.4 and KID -0.01 ± 0.18 against training digits (datasets/README.md);
    # an 8-step generator draws blobs.
    assert scores["fid_mnist_cnn"] > 30 and scores["kid_mnist_cnn"] > 1.0
    assert "fid_mnist_cnn" in capsys.readouterr().out



def test_a_learning_rate_typed_at_resume_is_the_one_trained_with_not_the_checkpoints(tmp_path):
    import json

    run_dir = tmp_path / "run"
    assert run_main(main, [*TINY_VANILLA[2:], "--epochs", "1", "--lr", "1e-3", "--run-dir", run_dir]) == 0
    assert run_main(main, ["--resume", run_dir, "--epochs", "2", "--lr", "1e-5"]) == 0
    lines = [line.split(",") for line in (run_dir / "history.csv").read_text().splitlines()]
    rates = [{key: float(value) for key, value in zip(lines[0], row) if key.startswith("lr/")} for row in lines[1:]]
    assert rates == [{"lr/d": 1e-3, "lr/g": 1e-3}, {"lr/d": 1e-5, "lr/g": 1e-5}]
    assert json.loads((run_dir / "config.json").read_text())["lr"] == 1e-5
