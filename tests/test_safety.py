"""Nothing of the user's is lost or silently wrong: runs, resumes, outputs and flag values.

Each test is one class of problem that main once had: a failed resume rewrote config.json, another chapter
relabelled a run, --run-dir wrote into a user's folder, --out replaced files, a half-made run became "latest",
a damaged checkpoint was a traceback, bad values reached TensorFlow, metrics.json held NaN.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_VANILLA, run_main, run_script


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_copy(vanilla_run, tmp_path) -> Path:
    """A private copy of the shared finished tiny vanilla run (2 epochs, checkpoints 1 and 2)."""
    copy = tmp_path / "run"
    shutil.copytree(vanilla_run, copy)
    return copy


def _vanilla(argv, capsys=None):
    from chapters.vanilla_gan.main import main

    return run_main(main, argv)


# --- resume -----------------------------------------------------------------------------------------------------

def test_explicit_flags_are_exactly_the_typed_ones_whatever_their_form():
    """What a --resume keeps from the saved run rests on this: a flag typed with its default value is typed,
    a flag left out is not, and parsing for it changes nothing in the parser."""
    from chapters.anime_dcgan.main import build_parser
    from common.cli import explicit_flags

    parser = build_parser()
    argv = ["--epochs", "12", "--label-smoothing=0.9", "--feature-matching", "--interpolate-seeds", "1", "2"]
    assert explicit_flags(parser, argv) == {"epochs", "label_smoothing", "feature_matching", "interpolate_seeds"}
    assert explicit_flags(parser, []) == set()
    args = parser.parse_args([])  # the parser's own defaults are untouched
    assert args.epochs == 12 and args.label_smoothing is None and args.feature_matching is False
    assert args.chapter == "anime_dcgan"


def test_a_later_stage_takes_the_runs_data_flags_unless_typed_now(tmp_path):
    from chapters.anime_dcgan.main import build_parser
    from common.run import Run, use_saved_flags

    run = Run(tmp_path / "run")
    run.root.mkdir()
    run.config_file.write_text(json.dumps({"chapter": "anime_dcgan", "data": "/my/faces", "faces": 500}))
    parser = build_parser()
    for argv, data, faces in (([], "/my/faces", 500), (["--faces", "8000"], "/my/faces", 8000),
                              (["--data", "other"], "other", 500)):
        args = parser.parse_args(argv)
        use_saved_flags(run, args, parser, argv, ("data", "faces"))
        assert (args.data, args.faces) == (data, faces), argv


def test_failed_resume_leaves_the_run_as_it_was(run_copy, capsys):
    before = _digest(run_copy)
    assert _vanilla(["--resume", run_copy, "--latent-dim", "50", "--epochs", "3"]) == 2
    assert "does not fit these models" in capsys.readouterr().err
    assert _digest(run_copy) == before  # config.json untouched: a plain --resume still works
    assert _vanilla(["--resume", run_copy, "--epochs", "3"]) == 0
    assert json.loads((run_copy / "config.json").read_text())["epochs"] == 3


def test_a_run_of_another_chapter_is_refused(run_copy, capsys):
    from chapters.gan_3d.main import main as gan_3d

    before = _digest(run_copy)
    assert run_main(gan_3d, ["--resume", run_copy]) == 2
    err = capsys.readouterr().err
    assert "run of the vanilla_gan chapter" in err and "chapters/vanilla_gan/main.py --resume" in err
    assert _digest(run_copy) == before


def test_run_dir_that_is_not_a_run_is_refused(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "models").mkdir(parents=True)
    (folder / "history.csv").write_text("my own numbers\n")
    (folder / "models" / "generator.keras").write_bytes(b"my model")
    before = _digest(folder)
    assert _vanilla([*TINY_VANILLA, "--run-dir", folder]) == 2
    assert "not a run" in capsys.readouterr().err
    assert _digest(folder) == before and sorted(p.name for p in folder.iterdir()) == ["history.csv", "models"]


def test_a_half_made_run_is_never_the_latest(vanilla_run, tmp_path, capsys):
    runs = tmp_path / "runs" / "vanilla_gan"
    shutil.copytree(vanilla_run, runs / "20260101-000000")
    crashed = runs / "20990101-000000"  # newer, but it died before its first checkpoint
    (crashed / "checkpoints").mkdir(parents=True)
    (crashed / "config.json").write_text(json.dumps({"chapter": "vanilla_gan", "latent_dim": 100}))
    out = tmp_path / "grid.png"
    assert _vanilla(["--stage", "sample", "--runs-root", tmp_path / "runs", "--num", "4", "--out", out]) == 0
    assert out.exists()
    assert _vanilla(["--resume", "--runs-root", tmp_path / "runs", "--epochs", "2"]) == 0
    assert "20260101-000000 has already trained 2 epochs" in capsys.readouterr().out


def _interrupt_training(monkeypatch):
    import common.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(common.train, "training_stream", interrupted)


def test_interrupt_before_the_first_checkpoint_leaves_nothing(tmp_path, monkeypatch, capsys):
    _interrupt_training(monkeypatch)
    runs = tmp_path / "runs"
    assert _vanilla([*TINY_VANILLA, "--runs-root", runs]) == 130
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "--resume" not in err
    assert not any((runs / "vanilla_gan").iterdir())  # the empty run folder was removed


def test_interrupt_names_the_run_to_resume(run_copy, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs" / "vanilla_gan"
    shutil.copytree(run_copy, runs / "20990101-000000")  # a newer run: the hint must not point at it
    _interrupt_training(monkeypatch)
    assert _vanilla(["--resume", run_copy, "--epochs", "3"]) == 130
    assert f"--resume {run_copy}" in capsys.readouterr().err
    assert run_copy.exists()


def test_a_damaged_checkpoint_falls_back_to_the_one_before(run_copy, capsys):
    data = next((run_copy / "checkpoints").glob("ckpt-2.data-*"))
    os.truncate(data, data.stat().st_size // 3)
    assert _vanilla(["--resume", run_copy, "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "ckpt-2 is damaged" in out and "resumed from ckpt-1" in out
    assert "at epoch 1" in out


def test_an_empty_checkpoint_state_file_is_not_a_traceback(run_copy, capsys):
    (run_copy / "checkpoints" / "checkpoint").write_text("")
    assert _vanilla(["--resume", run_copy, "--epochs", "3"]) == 0
    assert "at epoch 2" in capsys.readouterr().out


def test_no_usable_checkpoint_is_one_sentence(run_copy, capsys):
    for data in (run_copy / "checkpoints").glob("ckpt-*.data-*"):
        data.write_bytes(b"")
    assert _vanilla(["--resume", run_copy, "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no usable checkpoint") and "\n" not in err


# --- outputs ----------------------------------------------------------------------------------------------------

def test_out_never_replaces_a_file_without_overwrite(vanilla_run, tmp_path, capsys):
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"a picture of mine")
    assert _vanilla(["--stage", "sample", "--run-dir", vanilla_run, "--num", "4", "--out", mine]) == 2
    assert "--overwrite" in capsys.readouterr().err and mine.read_bytes() == b"a picture of mine"
    assert _vanilla(["--stage", "sample", "--run-dir", vanilla_run, "--num", "4", "--out", mine, "--overwrite"]) == 0
    assert mine.read_bytes().startswith(b"\x89PNG")


def test_out_naming_a_folder_is_one_sentence_and_leaks_nothing(vanilla_run, tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    assert _vanilla(["--stage", "sample", "--run-dir", vanilla_run, "--num", "4", "--out", folder]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not any(folder.iterdir()) and [p.name for p in tmp_path.iterdir()] == ["pictures"]


def test_age_strip_never_replaces_the_photo(tmp_path, capsys):
    from chapters.age_cgan.main import main as age_cgan

    photo = tmp_path / "me.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(photo)
    before = photo.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert run_main(age_cgan, ["--stage", "age", "--image", photo, "--out", photo, *extra,
                                   "--runs-root", tmp_path / "runs"]) == 2
        assert "is the input file" in capsys.readouterr().err
    assert photo.read_bytes() == before and not (tmp_path / "runs").exists()


def test_a_damaged_or_wrong_model_is_one_sentence(run_copy, capsys):
    generator = run_copy / "models" / "generator.keras"
    shutil.copy(run_copy / "models" / "discriminator.keras", generator)
    assert _vanilla(["--stage", "sample", "--run-dir", run_copy, "--num", "4"]) == 2
    assert "is not a generator of z" in capsys.readouterr().err
    generator.write_bytes(os.urandom(2048))
    assert _vanilla(["--stage", "sample", "--run-dir", run_copy, "--num", "4"]) == 2
    err = capsys.readouterr().err
    assert "is not a Keras model file" in err and "not found" not in err.lower()


def test_metrics_json_is_strict_json(tmp_path):
    from common.run import Run

    run = Run(tmp_path)
    run.write_json(run.metrics_file, {"metrics": {"fid": 1.5, "is": float("nan"), "kid": np.float32("inf")}})

    def refuse(name):
        raise AssertionError(f"{name} in metrics.json")

    record = json.loads(run.metrics_file.read_text(), parse_constant=refuse)
    assert record["metrics"] == {"fid": 1.5, "is": None, "kid": None}
    assert "nan" in record["nulls"]["metrics.is"] and "inf" in record["nulls"]["metrics.kid"]


# --- values refused before any work -----------------------------------------------------------------------------

BAD_VALUES = [
    ("vanilla_gan", ["--seed", "-1"]), ("vanilla_gan", ["--latent-dim", "0"]),
    ("vanilla_gan", ["--historical-averaging", "-1"]), ("vanilla_gan", ["--gp-weight", "-5"]),
    ("vanilla_gan", ["--minibatch-discrimination", "-2"]), ("vanilla_gan", ["--eval-samples", "1"]),
    ("gan_3d", ["--num-shapes", "0"]), ("gan_3d", ["--g-lr", "0"]), ("gan_3d", ["--d-lr", "-1e-4"]),
    ("age_cgan", ["--num-faces", "0"]), ("age_cgan", ["--encoder-steps", "0"]), ("age_cgan", ["--refine-lr", "0"]),
    ("srgan", ["--tile", "0"]), ("srgan", ["--crops-per-image", "0"]), ("srgan", ["--lr", "nan"]),
    ("srgan", ["--num", "4"]), ("srgan", ["--out", "x.png"]),  # no sample stage: the flags are not offered
    ("anime_dcgan", ["--filters", "0"]), ("pgan", ["--epochs", "3"]), ("pgan", ["--learning-rate", "-1"]),
]


@pytest.mark.parametrize("chapter,flags", BAD_VALUES, ids=[f"{c}{' '.join(f)}" for c, f in BAD_VALUES])
def test_bad_values_are_refused_before_any_work(chapter, flags, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"chapters.{chapter}.main").main
    assert run_main(main, [*flags, "--runs-root", tmp_path / "runs"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flags[0] in err
    assert not (tmp_path / "runs").exists()


def test_an_error_is_one_line_in_a_fresh_process(tmp_path):
    """No TensorFlow start-up or warning lines around the sentence a user must read."""
    result = run_script("chapters/vanilla_gan/main.py", "--resume", tmp_path / "nowhere")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: run directory {tmp_path / 'nowhere'} does not exist"]


def test_a_sigterm_whose_exception_library_code_swallows_still_ends_the_run(capsys):
    import signal
    import time

    from common.cli import check_terminated

    units = []

    def main(argv):
        try:  # the handler raises Terminated wherever the main thread is: here, inside code that swallows it
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except BaseException:
            pass
        for unit in range(3):  # a long loop (an upscale's tiles) checks between units of work
            check_terminated()
            units.append(unit)
        return 0

    assert run_main(main, []) == 143
    assert units == [] and "interrupted (SIGTERM)" in capsys.readouterr().err
    assert run_main(lambda argv: check_terminated(), []) == 0  # a new run starts with no stop request
