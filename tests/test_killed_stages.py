"""Age-cGAN's encoder and optimize stages survive SIGKILL like every GAN stage (tests/test_killed_runs.py): inside
a checkpoint write, then at a random moment after a new one; the resumed stage ends with exactly the steps of an
unbroken one. (A file of its own: pytest-xdist hands out whole files, and test_killed_runs.py is the longest.)"""
from __future__ import annotations

import signal

import test_killed_runs as killed
from conftest import ROOT, run_script

# Age-cGAN's encoder and optimize stages are fit_gan stages in <run>/<stage> whose epochs are 100 (encoder) or 10
# (optimize) steps: checkpoint N holds N epochs.
AGE = ["--width", "0.125", "--num-faces", "48", "--batch-size", "8", "--optimize-batch", "4"]


def test_age_cgan_encoder_and_optimize_killed_in_a_checkpoint_write_and_then_at_random_lose_no_step(tmp_path):
    import keras

    run_dir, script = tmp_path / "run", "chapters/age_cgan/main.py"
    # a small face-recognition network (--fr-model takes any Keras embedding model): the shipped face-api network
    # would cost most of this test's minutes, and what is tested here is the stage's checkpoints
    face = keras.Input((32, 32, 3))
    keras.Model(face, keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(face))).save(tmp_path / "fr.keras")
    age = [*AGE, "--fr-model", tmp_path / "fr.keras"]
    done = run_script(script, *age, "--stage", "gan", "--epochs", 1, "--steps-per-epoch", 2, "--run-dir", run_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    for stage, every in (("encoder", 100), ("optimize", 10)):  # the optimize stage reads the encoder's model
        steps, folder = f"--{stage}-steps", run_dir / stage  # <run>/<stage>/checkpoints
        dying = run_script("tests/kill_in_checkpoint_write.py", "age_cgan", 2, *age, "--stage", stage, steps,
                            3 * every, "--run-dir", run_dir)
        assert dying.returncode == -signal.SIGKILL, dying.stderr[-2000:]
        assert (folder / "checkpoints" / "ckpt-2.index").exists() and killed._latest(folder) == 1

        kept = killed._kill_after_a_new_checkpoint([ROOT / script, *age, "--stage", stage, "--resume", "--run-dir",
                                                    run_dir, steps, 10 ** 6], folder, 2)
        finished = run_script(script, *age, "--stage", stage, "--resume", "--run-dir", run_dir, steps,
                              (kept + 1) * every)
        assert finished.returncode == 0, finished.stderr[-2000:]
        assert f"resumed {folder} at epoch {kept} (step {kept * every})" in finished.stdout
        assert killed._latest(folder) == kept + 1
        assert killed._checkpoint_value(folder, "optimizer/", "iterations") == (kept + 1) * every  # no step lost
