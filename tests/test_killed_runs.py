"""Every chapter's default stage survives SIGKILL: inside a checkpoint write, and at a random moment of training.

Each case runs a tiny configuration in three fresh processes: (1) it dies while writing checkpoint N, leaving
half-written files under the checkpoint's final names; (2) `--resume` continues from checkpoint N-1 and is
killed from outside at a random moment after it has written a new checkpoint; (3) `--resume` again finishes.
The last checkpoint must then hold exactly the steps of an uninterrupted run: a lost or repeated step would show
in the optimizer's step counter (or PGAN's image counter), so a run loses at most one checkpoint interval.
"""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_script

STEPS = 2  # per epoch, every epoch-based case
# chapter: (flags, the checkpoint write that dies, the checkpoint a resume starts from)
CASES = {
    "vanilla_gan": (["--batch-size", "8"], 2, 1),
    "anime_dcgan": (["--faces", "24", "--batch-size", "4"], 2, 1),
    "gan_3d": (["--cube-len", "32", "--grid", "4", "--num-shapes", "16"], 2, 1),  # the default width and batch: the fastest Conv3D shapes here
    "age_cgan": (["--width", "0.125", "--num-faces", "48", "--batch-size", "8"], 2, 1),
    # write 1 is the finished SRResNet pretraining (its own folder), 2 and 3 the adversarial epochs 1 and 2
    "srgan": (["--residual-blocks", "1", "--hr-size", "48", "--batch-size", "2", "--pretrain-epochs", "1",
               "--content-loss", "mse", "--bicubic-skip", "--eval-data", "tests/fixtures/srgan_held_out"], 3, 1),
}
# PGAN grows by images, not epochs: a checkpoint every 160 images (10 steps of 16); 4x4 for 640 images (writes
# 1-4), fade-in to 8x8 over 1280 (writes 5-12), 8x8 for 640 more (13-16). Dying in write 6 resumes at 160
# fade-in images, alpha 0.125.
PGAN = ["--max-resolution", "8", "--stable-images", "640", "--fade-images", "1280", "--tick-images", "160",
        "--batch-size", "16", "--batch-sizes", "4:16,8:16", "--faces", "96", "--latent-dim", "16", "--max-filters", "8",
        "--seed", "3"]


def _latest(run_dir: Path) -> int:
    """The checkpoint a resume would read: the one the `checkpoint` state file names, not the newest files."""
    state = run_dir / "checkpoints" / "checkpoint"
    if not state.exists():
        return 0
    first = state.read_text().splitlines()[0]  # model_checkpoint_path: "ckpt-N"
    return int(first.rsplit("-", 1)[1].rstrip('"'))


def _checkpoint_value(run_dir: Path, key_start: str, key_part: str):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    keys = [k for k in reader.get_variable_to_shape_map() if k.startswith(key_start) and key_part in k]
    assert len(keys) == 1, keys
    return reader.get_tensor(keys[0])


def _assert_same_checkpoints(run_a: Path, run_b: Path) -> None:
    import numpy as np
    import tensorflow as tf

    readers = [tf.train.load_checkpoint(str(run / "checkpoints")) for run in (run_a, run_b)]
    keys = sorted(key for key in readers[0].get_variable_to_shape_map() if "VARIABLE_VALUE" in key)
    assert keys == sorted(key for key in readers[1].get_variable_to_shape_map() if "VARIABLE_VALUE" in key)
    assert any(key.startswith("generator/") for key in keys)
    for key in keys:
        np.testing.assert_array_equal(readers[0].get_tensor(key), readers[1].get_tensor(key), err_msg=key)


def _kill_after_a_new_checkpoint(args: list[str], run_dir: Path, first_new: int) -> int:
    """Starts `args`, waits until it has written checkpoint `first_new`, kills it somewhere in the next
    interval (maybe inside a save) and returns the checkpoint a resume will start from."""
    process = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while _latest(run_dir) < first_new:
            assert process.poll() is None, f"exited {process.returncode} early:\n{process.stderr.read()[-2000:]}"
            assert time.time() < deadline, "the resumed run never wrote a new checkpoint"
            time.sleep(0.05)
        time.sleep(random.uniform(0.0, 1.0))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    latest = _latest(run_dir)
    assert latest >= first_new
    return latest


@pytest.mark.parametrize("chapter", CASES)
def test_an_epoch_run_killed_in_a_checkpoint_write_and_then_at_random_resumes_with_no_step_lost(chapter, tmp_path):
    flags, dying_write, resumed_from = CASES[chapter]
    run_dir = tmp_path / "run"
    script = f"chapters/{chapter}/main.py"
    killed = run_script("tests/kill_in_checkpoint_write.py", chapter, dying_write, *flags, "--steps-per-epoch",
                        STEPS, "--epochs", 3, "--run-dir", run_dir)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (run_dir / "checkpoints" / f"ckpt-{resumed_from + 1}.index").exists()  # half-written, on disk...
    assert _latest(run_dir) == resumed_from  # ...but never named the latest

    kept = _kill_after_a_new_checkpoint([ROOT / script, "--resume", run_dir, "--epochs", 200], run_dir,
                                        resumed_from + 1)
    finished = run_script(script, "--resume", run_dir, "--epochs", kept + 1)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"resumed {run_dir} at epoch {kept} (step {kept * STEPS})" in finished.stdout
    assert _latest(run_dir) == kept + 1
    assert _checkpoint_value(run_dir, "g_optimizer/", "iterations") == (kept + 1) * STEPS
    history = (run_dir / "history.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in history][-1] == kept + 1
    if chapter == "gan_3d":  # it repeats bit for bit on a CPU (README): the killed run is the unbroken one
        assert "16 chair shapes" in finished.stdout  # the run's --num-shapes, restored with the run
        straight = run_script(script, *flags, "--steps-per-epoch", STEPS, "--epochs", kept + 1,
                              "--run-dir", tmp_path / "straight")
        assert straight.returncode == 0, straight.stderr[-2000:]
        _assert_same_checkpoints(run_dir, tmp_path / "straight")


def test_pgan_killed_in_a_fade_in_checkpoint_write_and_then_at_random_resumes_alpha_resolution_and_images(
        tmp_path):
    run_dir = tmp_path / "run"
    killed = run_script("tests/kill_in_checkpoint_write.py", "pgan", 6, *PGAN, "--run-dir", run_dir)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _latest(run_dir) == 5
    assert _checkpoint_value(run_dir, "progress/", "/alpha/") == pytest.approx(0.125)

    kept = _kill_after_a_new_checkpoint([ROOT / "chapters/pgan/main.py", "--resume", run_dir], run_dir, 6)
    progress = {name: _checkpoint_value(run_dir, "progress/", f"/{name}/")
                for name in ("resolution", "alpha", "phase_images", "total_images")}
    finished = run_script("chapters/pgan/main.py", "--resume", run_dir)
    assert finished.returncode == 0, finished.stderr[-2000:]
    resolution = int(progress["resolution"])
    assert f"({resolution}x{resolution}), alpha {float(progress['alpha']):.3f}" in finished.stdout
    assert f"{int(progress['phase_images'])} of " in finished.stdout
    assert _latest(run_dir) == 16 and kept < 16
    assert _checkpoint_value(run_dir, "progress/", "/total_images/") == 640 + 1280 + 640
    assert _checkpoint_value(run_dir, "progress/", "/resolution/") == 8
