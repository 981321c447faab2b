"""Reliability and security across the chapters: faults, bad input for every loader, and the security rules.

What the other test files already cover is not repeated; this file adds the rest: bad image variants through every
image loader, wiki.mat / .mat / .npz damage, empty and missing inputs for every chapter, contradictory flags, flags
a later stage does not read, an unwritable run directory, a disk that fills up mid-run (a real tiny tmpfs where the
tests may mount one), a model write that fails, an interrupted checkpoint write on another chapter, nothing written
under --data, safe-mode loading of every saved model type in a fresh process, no pickle and no Lambda in the
product, TensorBoard on 127.0.0.1 by default, and interrupted downloads.
"""
from __future__ import annotations

import argparse
import datetime
import errno
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import UserError
from conftest import ROOT, run_main, run_script

VANILLA_TINY = ["--steps-per-epoch", "1", "--batch-size", "8"]
# The 100-Mpx test header makes Pillow warn before common.data.images refuses it; the refusal is what is tested.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- bad image files ----------------------------------------------------------------------------------------

def _png_header_only(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header declares width x height pixels (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


GOOD_VARIANTS = {"good_rgb.png", "good.jpg", "grey.png", "rgba.png", "palette.png", "sixteen_bit.png", "cmyk.jpg"}
SKIPPED_UP_FRONT = {"empty.png", "truncated.jpg", "notes.jpg", "bomb.png", "big.png", "loop_a.png", "loop_b.png"}


def _image_variants(folder: Path) -> Path:
    """Every kind of image file a user's folder may hold, good and bad, plus a symlink loop and a folder link."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    folder.mkdir(parents=True)
    Image.fromarray(rgb).save(folder / "good_rgb.png")
    Image.fromarray(rgb).save(folder / "good.jpg", quality=90)
    Image.fromarray(rgb[..., 0]).save(folder / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(folder / "palette.png")
    Image.fromarray(np.full((20, 24), 32896, np.uint16)).save(folder / "sixteen_bit.png")  # 128 * 257
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    (folder / "empty.png").write_bytes(b"")
    png = (folder / "good_rgb.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[:len(png) // 2])  # header fine, pixels cut: fails in decode
    jpg = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpg[:len(jpg) // 2])
    (folder / "notes.jpg").write_text("a text file with an image extension\n")
    (folder / "bomb.png").write_bytes(_png_header_only(20000, 20000))  # 400 Mpx: Pillow's bomb error
    (folder / "big.png").write_bytes(_png_header_only(10000, 10000))  # 100 Mpx: over common.data.images.MAX_PIXELS
    os.symlink("loop_b.png", folder / "loop_a.png")  # a symlink loop among the files
    os.symlink("loop_a.png", folder / "loop_b.png")
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "up")  # a folder loop: never followed
    return folder


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder` (links not followed) with its type, size and modification time."""
    entries = {}
    for parent, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(parent) / name
            stat = path.lstat()
            entries[str(path.relative_to(folder))] = (stat.st_mode, stat.st_size, stat.st_mtime_ns)
    return entries


def test_bad_image_variants_are_skipped_and_counted_by_every_image_loader(tmp_path):
    """find_images/usable_images (all folder chapters), load_folder_array (vanilla), the tf.data stream (anime,
    pgan, srgan), srgan's held-out photos, pgan's cached decode, anime's scoring images, Age-cGAN's --image."""
    import tensorflow as tf

    from chapters.age_cgan.data import load_photo
    from chapters.anime_dcgan.data import real_images
    from chapters.pgan.training import TrainingData
    from chapters.srgan.images import load_held_out, training_crops
    from common.data.images import check_image, find_images, image_folder, load_folder_array, usable_images
    from common.data.stream import training_stream

    folder = _image_variants(tmp_path / "data")
    before = _snapshot(folder)
    found = find_images(folder)
    assert {p.name for p in found} == GOOD_VARIANTS | SKIPPED_UP_FRONT | {"truncated.png"}  # sub/up not followed
    reasons = {p.name: check_image(p) for p in found}
    assert reasons["bomb.png"] == "too many pixels" and reasons["big.png"] == "too large (10000x10000 pixels)"
    for name in ("empty.png", "notes.jpg", "truncated.jpg", "loop_a.png"):
        assert reasons[name].startswith("not a readable image"), (name, reasons[name])
    logged: list[str] = []
    usable = usable_images(found, logged.append)
    assert {p.name for p in usable} == GOOD_VARIANTS | {"truncated.png"}
    assert logged[0].startswith("skipped 7 of 15 image files (")

    logged.clear()  # vanilla_gan's digit folders: PIL decode, the truncated PNG skipped with its name
    digits = load_folder_array(folder, 16, 1, logged.append)
    assert digits.shape == (7, 16, 16, 1) and any("truncated.png" in line for line in logged)

    count, take = image_folder(folder, 16, log=lambda _: None)  # anime_dcgan / pgan without cache: tf.data
    assert count == 8
    batches = list(training_stream(count, take, 1, seed=0).take(21).as_numpy_iterator())  # 3 passes, 7 decode
    assert len(batches) == 21 and all(b["real"].shape == (1, 16, 16, 3) for b in batches)
    assert all(-1 <= b["real"].min() and b["real"].max() <= 1 for b in batches)

    count, take = training_crops(folder, 16, 1, seed=0, log=lambda _: None)  # srgan
    crops = list(training_stream(count, take, 2, seed=0).take(4).as_numpy_iterator())
    assert [c["hr"].shape for c in crops] == [(2, 16, 16, 3)] * 4 and crops[0]["lr"].shape == (2, 4, 4, 3)
    logged.clear()
    held_out = load_held_out(folder, logged.append)  # srgan's evaluation photos
    assert {name for name, _ in held_out} == GOOD_VARIANTS and any("truncated.png" in line for line in logged)

    data = TrainingData.from_args(argparse.Namespace(data=str(folder), cache_mb=64), log=lambda _: None)
    assert data.count == 8 and len(data.array(8)) == 7  # pgan: the cached decode drops the truncated file

    scoring = real_images(str(folder), 16, 20, seed=0, faces=0)  # anime_dcgan's evaluate stage
    assert scoring.shape == (7, 16, 16, 3)

    for name in GOOD_VARIANTS:  # age_cgan --stage age --image
        assert load_photo(folder / name).shape == (1, 64, 64, 3), name
    for name in SKIPPED_UP_FRONT | {"truncated.png"}:
        with pytest.raises(UserError, match="--image"):
            load_photo(folder / name)
    assert _snapshot(folder) == before  # the loaders never write into the data folder
    del tf


def test_sixteen_bit_greyscale_is_scaled_not_clipped_in_every_decoder(tmp_path):
    """A 16-bit PNG at level 32896 (= 128 * 257) is mid-grey, in the PIL paths as in TensorFlow's decoder."""
    import tensorflow as tf

    from chapters.age_cgan.data import load_photo
    from chapters.srgan.images import read_rgb
    from common.data.images import decode_image, load_folder_array

    path = tmp_path / "sixteen.png"
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    assert float(decode_image(tf.constant(str(path)), 8).numpy().mean()) == pytest.approx(128 / 127.5 - 1, abs=0.01)
    assert load_folder_array(tmp_path, 8, 1, lambda _: None).mean() == pytest.approx(128, abs=1)
    assert read_rgb(path).mean() == pytest.approx(128, abs=1)
    assert load_photo(path).mean() == pytest.approx(128 / 127.5 - 1, abs=0.01)


# --- .mat, wiki.mat and .npz damage ------------------------------------------------------------------------

def _datenum(year: int, month: int, day: int) -> float:
    return float(datetime.date(year, month, day).toordinal() + 366)


def _write_wiki(root: Path, rows: list[tuple], lengths_differ: bool = False) -> None:
    """wiki.mat with the real field layout; rows are (path, dob, photo_taken, face_score, write the file?)."""
    from scipy.io import savemat

    for i, (path, _dob, _taken, _score, write) in enumerate(rows):
        if write:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 48), (60 + 20 * i, 90, 120)).save(root / path)
    cells = np.empty((1, len(rows)), dtype=object)
    for i, row in enumerate(rows):
        cells[0, i] = np.array([row[0]])
    dob = [r[1] for r in rows] + ([1.0] if lengths_differ else [])
    wiki = {"dob": np.array([dob]), "photo_taken": np.array([[r[2] for r in rows]], np.float64),
            "full_path": cells, "face_score": np.array([[r[3] for r in rows]]),
            "second_face_score": np.array([[np.nan] * len(rows)])}
    savemat(root / "wiki.mat", {"wiki": wiki})


def test_wiki_mat_with_nan_and_out_of_range_dates_and_a_truncated_face(tmp_path, capsys):
    from chapters.age_cgan.data import find_wiki, wiki_sample

    ok = _datenum(1980, 3, 1)
    rows = [("01/a_ok.jpg", ok, 2010, 3.0, True),                # 30: kept
            ("02/b_ok.jpg", _datenum(1990, 8, 1), 2015, 2.0, True),  # 24: kept (August: -1)
            ("03/c_truncated.jpg", ok, 2005, 4.0, True),         # 25: kept by the index, fails to decode
            ("04/d.jpg", np.nan, 2010, 3.0, True),               # no birth date
            ("05/e.jpg", np.inf, 2010, 3.0, True),               # infinite date
            ("06/f.jpg", -5.0, 2010, 3.0, True),                 # before year 1
            ("07/g.jpg", 1e300, 2010, 3.0, True),                # past datetime's range
            ("08/h.jpg", ok, np.nan, 3.0, True),                 # no photo year
            ("09/i.jpg", ok, 1970, 3.0, True),                   # taken before birth
            ("10/j.jpg", ok, 2010, np.nan, True),                # NaN face score
            ("11/k.jpg", ok, 2010, -np.inf, True)]               # no face
    _write_wiki(tmp_path, rows)
    truncated = tmp_path / "03" / "c_truncated.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    index = find_wiki(tmp_path)
    assert [Path(p).name for p in index.paths] == ["a_ok.jpg", "b_ok.jpg", "c_truncated.jpg"]
    np.testing.assert_array_equal(index.ages, [30, 24, 25])
    assert index.dropped == {"no_face": 2, "bad_age": 6, "missing_file": 0} and index.total == 11
    assert "kept 3" in capsys.readouterr().out
    faces, classes = wiki_sample(index, 3, seed=0)  # optimize/evaluate stages: the bad face is dropped, not fatal
    assert faces.shape == (2, 64, 64, 3) and len(classes) == 2
    assert sorted(classes.tolist()) == sorted(index.classes[:2].tolist())  # labels stay with their faces


def test_damaged_wiki_mat_mat_and_npz_files_are_one_sentence(tmp_path, capsys):
    from chapters.age_cgan.main import main as age_main
    from chapters.gan_3d.data import read_mat
    from chapters.vanilla_gan.main import main as vanilla_main

    garbage = np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes()
    (tmp_path / "wiki").mkdir()
    (tmp_path / "wiki" / "wiki.mat").write_bytes(garbage)
    assert run_main(age_main, ["--data", tmp_path / "wiki", "--run-dir", tmp_path / "r1"]) == 2
    assert "as a MATLAB file" in _one_error_line(capsys)
    (tmp_path / "wiki2").mkdir()
    _write_wiki(tmp_path / "wiki2", [("a.jpg", 730000.0, 2000, 1.0, True)], lengths_differ=True)
    assert run_main(age_main, ["--data", tmp_path / "wiki2", "--run-dir", tmp_path / "r2"]) == 2
    assert "differ in length" in _one_error_line(capsys)
    (tmp_path / "chair_0.mat").write_bytes(garbage)
    with pytest.raises(UserError, match=r"chair_0\.mat as a MATLAB \.mat file"):
        read_mat(tmp_path / "chair_0.mat", 32)
    (tmp_path / "digits.npz").write_bytes(garbage)
    assert run_main(vanilla_main, ["--data", tmp_path / "digits.npz", "--run-dir", tmp_path / "r3"]) == 2
    assert "not a readable .npz" in _one_error_line(capsys)
    np.savez(tmp_path / "pickled.npz", x_train=np.array([{"a": 1}], dtype=object))  # would need pickle to load
    assert run_main(vanilla_main, ["--data", tmp_path / "pickled.npz", "--run-dir", tmp_path / "r4"]) == 2
    assert "not a readable .npz" in _one_error_line(capsys)
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 5))  # refused before a run folder is made


# --- missing, empty and contradictory input, for every chapter --------------------------------------------

CHAPTER_ARGS = {"vanilla_gan": [], "gan_3d": [], "age_cgan": [], "anime_dcgan": [], "pgan": [],
                "srgan": ["--content-loss", "mse"]}


@pytest.mark.parametrize("chapter", sorted(CHAPTER_ARGS))
def test_empty_missing_and_wrong_kind_of_data_are_refused_before_training(chapter, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"chapters.{chapter}.main").main
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "a_file.png"
    a_file.write_bytes(b"")
    for data, expect in ((tmp_path / "missing", "does not exist"), (empty, None), (a_file, None)):
        run_dir = tmp_path / "run"
        assert run_main(main, [*CHAPTER_ARGS[chapter], "--data", data, "--run-dir", run_dir]) == 2, data
        line = _one_error_line(capsys)
        assert str(data) in line or data.name in line, line  # the sentence names what it was given
        if expect:
            assert expect in line
        assert not run_dir.exists()


def test_contradictory_flags_are_one_sentence(tmp_path, capsys):
    from chapters.vanilla_gan.main import main

    assert run_main(main, ["--resume", tmp_path / "a", "--run-dir", tmp_path / "b"]) == 2
    assert "not both" in _one_error_line(capsys)
    assert run_main(main, ["--resume", tmp_path / "nowhere"]) == 2
    assert "does not exist" in _one_error_line(capsys)
    assert run_main(main, ["--batch-size", "0"]) == 2
    assert "a whole number of at least 1" in capsys.readouterr().err


# flags that a later stage does not read, per chapter and stage (training flags, or another stage's); some would fail
# the chapter's own checks (--pack 3 at batch 64, --max-resolution 48): the stage's refusal comes first
UNREAD_FLAGS = {
    ("gan_3d", "evaluate"): ["--epochs", "30", "--g-lr", "1e-4"],
    ("gan_3d", "sample"): ["--strips", "2"],
    ("gan_3d", "interpolate"): ["--format", "obj", "--d-acc-threshold", "2"],
    ("vanilla_gan", "sample"): ["--lr", "1e-3"],
    ("vanilla_gan", "evaluate"): ["--pack", "3"],
    ("anime_dcgan", "sample"): ["--arch", "dcgan"],
    ("anime_dcgan", "explore"): ["--eval-samples", "50"],
    ("anime_dcgan", "evaluate"): ["--batch-size", "8"],
    ("pgan", "sample"): ["--max-resolution", "48", "--loss", "wgan-gp"],
    ("pgan", "explore"): ["--out", "walk.gif"],
    ("pgan", "evaluate"): ["--stable-images", "1000"],
    ("srgan", "upscale"): ["--hr-size", "64"],
    ("srgan", "evaluate"): ["--lr", "1e-4"],
    ("age_cgan", "age"): ["--width", "0.5", "--seed", "3"],
    ("age_cgan", "evaluate"): ["--encoder-steps", "5"],
}


@pytest.mark.parametrize("chapter,stage", sorted(UNREAD_FLAGS))
def test_a_flag_that_a_later_stage_does_not_read_is_one_sentence_before_any_work(chapter, stage, tmp_path, capsys):
    """`--stage evaluate --epochs 30` would otherwise evaluate the trained run and ignore --epochs without a word."""
    import importlib

    module = importlib.import_module(f"chapters.{chapter}.main")
    flags = UNREAD_FLAGS[(chapter, stage)]
    argv = ["--stage", stage, *flags, "--run-dir", tmp_path / "no-run-here"]
    assert run_main(module.main, argv) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: --stage {stage} does not use ") and all(
        f in line for f in flags if f.startswith("--")), line
    assert "drop" in line and not (tmp_path / "no-run-here").exists()
    assert run_main(module.main, ["--stage", stage, "--resume", tmp_path / "no-run-here"]) == 2
    assert "--run-dir DIR (default: the latest run), not --resume" in _one_error_line(capsys)


# flags that only a later stage reads, typed with training
TRAINING_UNREAD = {"gan_3d": ["--num", "100", "--strips", "2"], "vanilla_gan": ["--out", "digits.png"],
                   "anime_dcgan": ["--sweep-rows", "3"], "pgan": ["--extractor", "inception"],
                   "srgan": ["--tile", "64"],
                   "age_cgan": ["--stage", "encoder", "--eval-samples", "50", "--age-classifier", "a.keras"]}


@pytest.mark.parametrize("case", sorted(TRAINING_UNREAD))
def test_a_flag_that_only_a_later_stage_reads_is_refused_by_training(case, tmp_path, capsys):
    import importlib

    module = importlib.import_module(f"chapters.{case}.main")
    flags = TRAINING_UNREAD[case]
    stage = flags[flags.index("--stage") + 1] if "--stage" in flags else "train"
    assert run_main(module.main, [*flags, "--run-dir", tmp_path / "run"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: --stage {stage} does not use "), line
    assert " (it is for --stage " in line or " (they are for --stage " in line, line
    assert all(f in line for f in flags[2 * (stage != "train"):] if f.startswith("--")), line
    assert not (tmp_path / "run").exists()


def _documented_commands():
    """(chapter, argv) of every `chapters/<chapter>/main.py ...` that the READMEs, the Makefile and the chapters'
    --help texts show and every `make train-*` runs; placeholders (N, FILE, R, ...) become 1."""
    import re
    import shlex

    texts = [*ROOT.glob("*.md"), *ROOT.glob("*/*.md"), *ROOT.glob("chapters/*/*.md"), ROOT / "Makefile",
             *ROOT.glob("chapters/*/main.py")]
    targets = re.findall(r"^(train-[\w-]+):", (ROOT / "Makefile").read_text(), re.M)
    make = subprocess.run(["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    found = set()
    for text in [make] + [path.read_text() for path in texts]:
        for match in re.finditer(r"chapters/(\w+)/main\.py ([^\n`#|]*)", text):
            flags = match.group(2).rstrip().rstrip("\\")
            if "$" in flags or not flags.startswith("--") or "--help" in flags:
                continue
            argv = [("1" if re.fullmatch(r"[A-Z_]+|.*\u2026.*", token) else token) for token in shlex.split(flags)]
            found.add((match.group(1), tuple(argv)))
    return sorted(found)


def test_every_documented_command_passes_the_stage_flag_check():
    import importlib

    from common.cli import check_stage_flags

    stages = []
    for chapter, argv in _documented_commands():
        module = importlib.import_module(f"chapters.{chapter}.main")
        parser = module.build_parser()
        check_stage_flags(parser, list(argv), module.STAGE_FLAGS, module.LATER_ONLY)  # or a UserError
        stages.append(parser.parse_args(list(argv)).stage)
    later = [stage for stage in stages if stage not in ("train", "pretrain", "gan", "encoder", "optimize", "all")]
    assert len(later) >= 20 and len(stages) - len(later) >= 20, stages


@pytest.mark.parametrize("chapter", ["age_cgan", "anime_dcgan", "gan_3d", "pgan", "srgan", "vanilla_gan"])
def test_every_flag_a_later_stage_declares_is_a_flag_of_its_chapter(chapter):
    """A misspelt name in STAGE_FLAGS would refuse the flag that the stage does read; every stage is covered."""
    import importlib

    module = importlib.import_module(f"chapters.{chapter}.main")
    parser = module.build_parser()
    flags = vars(parser.parse_args([]))
    for stage, reads in module.STAGE_FLAGS.items():
        assert set(reads) <= set(flags), (stage, set(reads) - set(flags))
    read_later = set().union(*module.STAGE_FLAGS.values())
    assert set(module.LATER_ONLY) <= read_later, set(module.LATER_ONLY) - read_later  # or no stage would read it
    stages = set(next(action.choices for action in parser._actions if action.dest == "stage"))
    assert stages - {"train", "pretrain", "gan", "encoder", "optimize", "all"} == set(module.STAGE_FLAGS)


# --- unwritable run directory, disk full, failing writes -------------------------------------------------

def test_unwritable_run_directory_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """Two ways: the runs root is a regular file (mkdir fails, for any user), and a read-only folder.

    chmod does not stop root (the tests may run as root), so there the read-only folder is simulated by failing
    the run directory's write probe with EACCES, which is what a non-root user gets from the 0o500 folder."""
    from chapters.vanilla_gan.main import main

    not_a_folder = tmp_path / "runs"
    not_a_folder.write_text("a file where the runs folder should be")
    assert run_main(main, [*VANILLA_TINY, "--runs-root", not_a_folder]) == 2
    assert "cannot write to the run directory" in _one_error_line(capsys)

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root: chmod is not enforced
            original = Path.write_bytes

            def refuse(self, data):
                if self.name == ".write-test":
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
                return original(self, data)

            monkeypatch.setattr(Path, "write_bytes", refuse)
        assert run_main(main, [*VANILLA_TINY, "--run-dir", locked / "run"]) == 2
        line = _one_error_line(capsys)
        assert "cannot write to the run directory" in line and "Permission denied" in line
        assert not (locked / "run" / "config.json").exists()  # refused before anything was trained
    finally:
        locked.chmod(0o700)


@contextmanager
def _tiny_filesystem(path: Path, size: str):
    """A size-limited tmpfs at `path` if this process may mount one (root with CAP_SYS_ADMIN), else None."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                             capture_output=True).returncode == 0 if shutil.which("mount") else False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory) -> Path:
    """A finished 1-epoch vanilla run; tests copy it and break the copy."""
    from chapters.vanilla_gan.main import main

    run_dir = tmp_path_factory.mktemp("reliability") / "run"
    assert run_main(main, [*VANILLA_TINY, "--epochs", "1", "--run-dir", run_dir]) == 0
    return run_dir


def _latest(run_dir: Path) -> str:
    import tensorflow as tf

    return Path(tf.train.latest_checkpoint(str(run_dir / "checkpoints"))).name


def test_disk_full_while_checkpointing_stops_clearly_and_the_last_checkpoint_resumes(one_epoch_run, tmp_path, capsys,
                                                                                     monkeypatch):
    """A real full disk where a tmpfs can be mounted; elsewhere TensorFlow's checkpoint writer is made to fail
    the way it does on a full disk (ResourceExhaustedError after writing part of the files)."""
    import tensorflow as tf

    from chapters.vanilla_gan.main import main

    run_bytes = sum(f.stat().st_size for f in Path(one_epoch_run).rglob("*") if f.is_file())
    with _tiny_filesystem(tmp_path / "fs", f"{2 * (run_bytes >> 20) + 16}m") as real_disk:  # a resume writes logs again
        run_dir = Path(shutil.copytree(one_epoch_run, tmp_path / "fs" / "run"))
        generator = (run_dir / "models" / "generator.keras").read_bytes()
        filler = tmp_path / "fs" / "filler"
        if real_disk:
            with open(filler, "wb") as handle:  # leave ~200 kB: enough for logs, not for a checkpoint
                handle.write(b"\0" * (shutil.disk_usage(run_dir).free - 200_000))
        else:
            original = tf.train.Checkpoint._write

            def full_disk(self, prefix, options=None):
                Path(prefix + ".data-00000-of-00001").write_bytes(b"\0" * 100)
                raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}: No space left on device")

            monkeypatch.setattr(tf.train.Checkpoint, "_write", full_disk)
        capsys.readouterr()
        assert run_main(main, ["--resume", run_dir, "--epochs", "2"]) == 2
        line = _one_error_line(capsys)
        assert "could not save epoch 2" in line and "No space left on device" in line
        assert "ckpt-1" in line and f"--resume {run_dir}" in line
        assert _latest(run_dir) == "ckpt-1"  # the half-written ckpt-2 is never named the latest
        assert (run_dir / "models" / "generator.keras").read_bytes() == generator
        if real_disk:
            filler.unlink()
        else:
            monkeypatch.setattr(tf.train.Checkpoint, "_write", original)
        assert run_main(main, ["--resume", run_dir, "--epochs", "2"]) == 0
        assert "at epoch 1 " in capsys.readouterr().out
        assert _latest(run_dir) == "ckpt-2"
        assert not list(run_dir.rglob(".*partial*"))


def test_a_model_write_failing_mid_file_keeps_the_previous_model_and_resumes(one_epoch_run, tmp_path, capsys,
                                                                            monkeypatch):
    import keras

    from chapters.vanilla_gan.main import main
    from common.checkpoints import load_model

    run_dir = Path(shutil.copytree(one_epoch_run, tmp_path / "run"))
    generator = (run_dir / "models" / "generator.keras").read_bytes()
    original = keras.Model.save

    def half_then_enospc(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(generator[:len(generator) // 3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))

    monkeypatch.setattr(keras.Model, "save", half_then_enospc)
    capsys.readouterr()
    assert run_main(main, ["--resume", run_dir, "--epochs", "2"]) == 2
    assert "No space left on device" in _one_error_line(capsys)
    assert (run_dir / "models" / "generator.keras").read_bytes() == generator  # never replaced by half a file
    assert not list((run_dir / "models").glob(".*"))  # and no partial file left behind
    load_model(run_dir / "models" / "generator.keras", "")
    monkeypatch.setattr(keras.Model, "save", original)
    assert run_main(main, ["--resume", run_dir, "--epochs", "3"]) == 0
    assert _latest(run_dir) == "ckpt-3"


def test_a_truncated_model_is_refused_in_one_sentence_and_a_partial_file_is_never_loaded(one_epoch_run, tmp_path,
                                                                                         capsys):
    from chapters.vanilla_gan.main import main

    run_dir = Path(shutil.copytree(one_epoch_run, tmp_path / "run"))
    models = run_dir / "models"
    (models / ".generator-partial.keras").write_bytes(b"PK\x03\x04 half a zip")  # left by a kill mid-save
    assert run_main(main, ["--stage", "sample", "--run-dir", run_dir, "--num", "4", "--out", tmp_path / "a.png"]) == 0
    whole = (models / "generator.keras").read_bytes()
    (models / "generator.keras").write_bytes(whole[:len(whole) // 2])  # damaged by something else
    capsys.readouterr()
    assert run_main(main, ["--stage", "sample", "--run-dir", run_dir, "--out", tmp_path / "b.png"]) == 2
    assert "is not a Keras model file" in _one_error_line(capsys)


def test_gan_3d_never_writes_under_data(tmp_path):
    """3D-GAN's only use of --data is load_volumes (its parsed-volume cache must live elsewhere)."""
    import scipy.io

    from chapters.gan_3d.data import load_volumes

    split = tmp_path / "data" / "chair" / "30" / "train"
    split.mkdir(parents=True)
    for i in range(3):
        volume = np.zeros((30, 30, 30), np.uint8)
        volume[3 + i:20, 5:15, 2:25 - i] = 1
        scipy.io.savemat(split / f"chair_{i:06d}_1.mat", {"instance": volume})
    before = _snapshot(tmp_path / "data")
    first = load_volumes(str(tmp_path / "data"), "chair", "train", 32, 0)
    np.testing.assert_array_equal(load_volumes(str(tmp_path / "data"), "chair", "train", 32, 0), first)
    assert first.shape == (3, 32, 32, 32)
    assert _snapshot(tmp_path / "data") == before  # no cache or anything else written under --data


def test_a_run_on_bad_images_interrupted_in_a_checkpoint_write_resumes_and_writes_nothing_under_data(
        tmp_path, capsys, monkeypatch):
    """anime_dcgan on the folder of bad image variants: they are skipped and counted, training goes on; an
    interrupt while ckpt-2 is half written (its files at their final names) leaves ckpt-1 the latest, --resume
    continues from it; the data folder is untouched (names, sizes, mtimes). SIGKILL: tests/test_killed_runs.py."""
    import tensorflow as tf

    from chapters.anime_dcgan.main import main

    folder = _image_variants(tmp_path / "data")
    before = _snapshot(folder)
    original, calls = tf.train.Checkpoint._write, []

    def interrupted(self, prefix, options=None):
        calls.append(prefix)
        if len(calls) == 2:
            for suffix in (".index", ".data-00000-of-00001"):
                Path(prefix + suffix).write_bytes(b"\0" * 64)
            raise KeyboardInterrupt  # what Ctrl-C does at that moment
        return original(self, prefix, options=options)

    monkeypatch.setattr(tf.train.Checkpoint, "_write", interrupted)
    run_dir = tmp_path / "run"
    assert run_main(main, ["--data", folder, "--arch", "dcgan", "--filters", "8", "--epochs", "2",
                           "--steps-per-epoch", "2", "--batch-size", "4", "--run-dir", run_dir]) == 130
    out = capsys.readouterr().out
    assert "skipped 7 of 15 image files" in out and "8 images in" in out
    assert (run_dir / "checkpoints" / "ckpt-2.index").exists() and _latest(run_dir) == "ckpt-1"
    monkeypatch.setattr(tf.train.Checkpoint, "_write", original)
    assert run_main(main, ["--resume", run_dir]) == 0
    assert "at epoch 1 " in capsys.readouterr().out
    assert _latest(run_dir) == "ckpt-2" and (run_dir / "models" / "generator.keras").exists()
    assert _snapshot(folder) == before


# --- security ----------------------------------------------------------------------------------------------

_SAFE_LOAD = r'''
import json, sys, zipfile
import numpy as np
sys.path.insert(0, sys.argv[1])
import keras
import common.layers, chapters.vanilla_gan.models, chapters.gan_3d.models, chapters.age_cgan.models  # noqa
import chapters.anime_dcgan.models, chapters.srgan.models, chapters.pgan.models  # noqa: registers layers
from common.checkpoints import load_model
folder = sys.argv[2]
names = json.load(open(folder + "/names.json"))
expected = np.load(folder + "/io.npz", allow_pickle=False)
for name, path in names.items():
    assert '"Lambda"' not in zipfile.ZipFile(path).read("config.json").decode(), name
    model = load_model(path, "")  # keras.models.load_model(path, safe_mode=True, compile=False)
    inputs = [expected[f"{name}/in{i}"] for i in range(len(model.inputs))]
    out = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    out = [out[k] for k in sorted(out)] if isinstance(out, dict) else out
    for j, value in enumerate(out if isinstance(out, (list, tuple)) else [out]):
        np.testing.assert_allclose(np.asarray(value), expected[f"{name}/out{j}"], rtol=1e-4, atol=1e-5)
    print("loaded", name)
'''


def _outputs(out) -> list:
    """A model's outputs as a list: one tensor, a list, or a dict (multi-head models) in key order."""
    if isinstance(out, dict):
        return [out[k] for k in sorted(out)]
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _tiny_models() -> dict:
    from chapters.age_cgan import models as age
    from chapters.anime_dcgan import models as anime
    from chapters.gan_3d import models as voxels
    from chapters.pgan.models import Growing
    from chapters.srgan import models as sr
    from chapters.vanilla_gan import models as vanilla
    from common.stabilize import Stabilizers, discriminator_views

    growing = Growing(latent_dim=8, max_level=1, max_filters=8, seed=1)
    d_packed = discriminator_views(vanilla.build_discriminator(hidden=8, pack=2),
                                   Stabilizers(minibatch_discrimination=3, pack=2))[0]
    return {
        "vanilla_generator": vanilla.build_generator(latent_dim=8, hidden=8),
        "vanilla_discriminator_mbd_pack": d_packed,
        "gan3d_generator": voxels.build_generator(32, width=0.0625),
        "gan3d_discriminator": voxels.build_discriminator(32, width=0.0625),
        "age_encoder": age.build_encoder(width=0.125),
        "age_generator": age.build_generator(width=0.125),
        "age_discriminator": age.build_discriminator(width=0.125),
        "anime_book_generator": anime.build_generator("book", 32, 16, filters=8),
        "anime_book_discriminator": anime.build_discriminator("book", 32, filters=8),
        "anime_dcgan_generator": anime.build_generator("dcgan", 32, 16, filters=8),
        "anime_dcgan_discriminator": anime.build_discriminator("dcgan", 32, filters=8),
        "srgan_generator": sr.build_generator(residual_blocks=1),
        "pgan_generator_4x4": growing.generator(0, "stable"),
        "pgan_generator_8x8_fade": growing.generator(1, "fade"),
        "pgan_generator_8x8": growing.generator(1, "stable"),
        "pgan_discriminator_8x8_fade": growing.discriminator(1, "fade"),
        "pgan_discriminator_8x8": growing.discriminator(1, "stable"),
    }


def test_every_saved_model_type_of_every_chapter_loads_in_safe_mode_in_a_fresh_process(tmp_path):
    from common.checkpoints import load_model, save_model

    rng = np.random.default_rng(0)
    names, arrays = {}, {}

    def record(name, model, path):
        names[name] = str(path)
        inputs = [rng.uniform(-1, 1, [2] + [d or 16 for d in x.shape[1:]]).astype(np.float32) for x in model.inputs]
        out = model(inputs if len(inputs) > 1 else inputs[0], training=False)
        for i, value in enumerate(inputs):
            arrays[f"{name}/in{i}"] = value
        for j, value in enumerate(_outputs(out)):
            arrays[f"{name}/out{j}"] = np.asarray(value)

    for name, model in _tiny_models().items():
        record(name, model, save_model(model, tmp_path / f"{name}.keras"))
    # The networks that ship with the repository (feature extractors and the age estimator).
    for path in (ROOT / "datasets" / "mnist_classifier.keras", ROOT / "datasets" / "faces_cnn.keras",
                 ROOT / "chapters" / "age_cgan" / "weights" / "age_classifier.keras"):
        record(path.stem, load_model(path, ""), path)
    (tmp_path / "names.json").write_text(json.dumps(names))
    np.savez(tmp_path / "io.npz", **arrays)
    script = tmp_path / "load_all.py"
    script.write_text(_SAFE_LOAD)
    result = run_script(str(script), str(ROOT), str(tmp_path), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("loaded ") == len(names) == 20


def test_safe_mode_refuses_a_model_with_a_lambda_layer(tmp_path):
    import keras

    from common.checkpoints import load_model

    x = keras.Input((3,))
    keras.Model(x, keras.layers.Lambda(lambda t: t * 2)(x)).save(tmp_path / "lambda.keras")
    with pytest.raises(UserError, match="cannot load"):
        load_model(tmp_path / "lambda.keras", "")


PRODUCT = ("common", "chapters", "datasets", "bench")
FORBIDDEN = re.compile(r"\bimport\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b|\bfrom\s+(c?pickle|dill|"
                       r"cloudpickle|joblib|shelve)\b|\bpickle\.|allow_pickle\s*=\s*True|\bLambda\s*\(|layers\.Lambda|"
                       r"safe_mode\s*=\s*False|torch\.load|enable_unsafe_deserialization|\beval\(|\bexec\(")


def _product_sources() -> list[Path]:
    ignored = {ROOT / "bench" / "tmp"}  # scratch space, git-ignored
    return [p for folder in PRODUCT for p in sorted((ROOT / folder).rglob("*.py"))
            if not any(parent in ignored for parent in p.parents)]


def test_no_pickle_no_lambda_and_only_safe_model_loading_in_the_product():
    sources = _product_sources()
    assert len(sources) > 30
    offences = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in sources
                for n, line in enumerate(p.read_text().splitlines(), 1)
                if FORBIDDEN.search(line.split("#")[0])]
    assert offences == []
    loads = [f"{p.relative_to(ROOT)}:{n}" for p in sources for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"(models|saving)\.load_model\(", line) and "safe_mode=True" not in line]
    assert loads == []
    assert FORBIDDEN.search("import pickle") and FORBIDDEN.search("layers.Lambda(f)")  # the check can fail


def test_tensorboard_binds_to_loopback_unless_a_host_is_given():
    make = ["make", "-n", "-C", str(ROOT), "tensorboard"]
    default = subprocess.run(make, capture_output=True, text=True, timeout=30)
    assert default.returncode == 0, default.stderr
    assert re.search(r"tensorboard\.main .*--host 127\.0\.0\.1\b", default.stdout), default.stdout
    shared = subprocess.run(make + ["HOST=0.0.0.0"], capture_output=True, text=True, timeout=30)
    assert "--host 0.0.0.0" in shared.stdout
    for path in _product_sources():  # nothing in the product starts a server on all interfaces
        text = path.read_text()
        assert "bind_all" not in text and "0.0.0.0" not in text, path


def test_archive_members_with_absolute_zip_paths_fifos_and_devices_are_refused(tmp_path):
    from datasets.download import safe_extract

    absolute = tmp_path / "abs.zip"
    with zipfile.ZipFile(absolute, "w") as zipped:
        zipped.writestr("ok.txt", "ok")
        info = zipfile.ZipInfo("x")
        info.filename = "/tmp/evil.txt"  # ZipInfo() strips a leading slash; a hostile archive need not
        zipped.writestr(info, "evil")
    with pytest.raises(UserError, match="outside"):
        safe_extract(absolute, tmp_path / "out")
    for kind in (tarfile.FIFOTYPE, tarfile.BLKTYPE):
        archive = tmp_path / f"special{kind!r}.tar"
        with tarfile.open(archive, "w") as tar:
            good = tarfile.TarInfo("data/ok.txt")
            good.size = 2
            tar.addfile(good, io.BytesIO(b"ok"))
            special = tarfile.TarInfo("data/special")
            special.type = kind
            tar.addfile(special)
        with pytest.raises(UserError, match="refus"):
            safe_extract(archive, tmp_path / "out2")
    assert not (tmp_path / "out" / "ok.txt").exists() and not (tmp_path / "out2" / "data").exists()


# --- interrupted downloads ---------------------------------------------------------------------------------

def test_a_download_interrupted_mid_stream_leaves_nothing_and_a_rerun_finishes(tmp_path, monkeypatch):
    import hashlib

    from datasets import download as fetch

    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(300_000))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "data" / "set.tar"
    original = shutil.copyfileobj

    def dies_halfway(src, dst, length=0):
        dst.write(src.read(100_000))
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    monkeypatch.setattr(fetch.shutil, "copyfileobj", dies_halfway)
    with pytest.raises(UserError, match="could not download"):
        fetch.download(source.as_uri(), target, digest)
    assert not target.exists() and not list(target.parent.glob("*.part"))
    monkeypatch.setattr(fetch.shutil, "copyfileobj", original)
    # A process killed mid-download (SIGKILL runs no cleanup) leaves a stale .part: never used, overwritten.
    Path(str(target) + ".part").write_bytes(b"stale half download")
    assert fetch.download(source.as_uri(), target, digest).read_bytes() == source.read_bytes()
    assert not Path(str(target) + ".part").exists()
    # A damaged file already at the destination fails its checksum and is fetched again.
    target.write_bytes(b"corrupted on disk")
    assert fetch.sha256_of(fetch.download(source.as_uri(), target, digest)) == digest


def test_make_leaves_its_cpu_defaults_out_when_args_resume_a_run():
    """A resumed run takes its flags from its config.json; the Makefile's CPU defaults, typed, would win over them
    (e.g. --arch paper on an SRGAN run made with the book's generator)."""
    for target, default in (("train-srgan", "--arch paper"), ("train-anime-dcgan", "--arch dcgan"),
                            ("train-age-cgan", "--encoder-steps 300")):
        make = ["make", "-n", "-C", str(ROOT), target]
        fresh = subprocess.run(make + ["ARGS=--seed 1"], capture_output=True, text=True, timeout=30)
        resumed = subprocess.run(make + ["ARGS=--resume runs/x"], capture_output=True, text=True, timeout=30)
        assert fresh.returncode == 0 and resumed.returncode == 0, fresh.stderr + resumed.stderr
        assert default in fresh.stdout and "--seed 1" in fresh.stdout
        assert default not in resumed.stdout and "--resume runs/x" in resumed.stdout
