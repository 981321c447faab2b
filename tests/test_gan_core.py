"""The shared training core: one step trains both networks, the stream is reproducible, NaN stops cleanly."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from chapters.vanilla_gan import models
from common.data import in_memory, training_stream
from common.gan import GAN


def _vanilla_gan() -> GAN:
    gan = GAN(models.build_generator(16), models.build_discriminator(32), 16)
    gan.compile(models.optimizer(), models.optimizer())
    return gan


def test_one_train_step_moves_both_discriminator_and_generator():
    gan = _vanilla_gan()
    before_d = [w.numpy().copy() for w in gan.discriminator.trainable_weights]
    before_g = [w.numpy().copy() for w in gan.generator.trainable_weights]
    batch = {"real": tf.random.uniform((8, 28, 28, 1), -1, 1), **gan.noise(8, tf.constant([3, 0], tf.int64))}
    logs = tf.function(gan.train_step)(batch)
    for name, before, model in (("D", before_d, gan.discriminator), ("G", before_g, gan.generator)):
        moved = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
        assert all(moved), f"{name}: {moved.count(False)} of {len(moved)} weight tensors did not change"
    assert np.isfinite(float(logs["d_loss"])) and np.isfinite(float(logs["g_loss"]))
    assert gan.d_optimizer.iterations.numpy() == 1 and gan.g_optimizer.iterations.numpy() == 1


def test_a_chapters_generator_penalty_is_part_of_gs_loss():
    class Brighter(GAN):  # a penalty on G's own fakes, like the 3D-GAN's connectivity term
        def generator_penalty(self, fake):
            seen.append(tuple(fake.shape))
            return 100.0 * tf.reduce_mean(fake)

    seen, plain = [], _vanilla_gan()
    penalised = Brighter(models.build_generator(16), models.build_discriminator(32), 16)
    penalised.compile(models.optimizer(), models.optimizer())
    penalised.generator.set_weights(plain.generator.get_weights())
    penalised.discriminator.set_weights(plain.discriminator.get_weights())
    batch = {"real": tf.random.uniform((8, 28, 28, 1), -1, 1), **plain.noise(8, tf.constant([3, 0], tf.int64))}
    plain.generator_step(batch)
    penalised.generator_step(batch)
    assert seen == [(8, 28, 28, 1)]  # it judged the step's own fakes
    z = batch["z_g"]
    assert float(tf.reduce_mean(penalised.generator(z))) < float(tf.reduce_mean(plain.generator(z)))  # and G obeyed


def test_stream_resumed_at_a_step_gives_the_same_batches_as_an_unbroken_stream():
    data = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    take = in_memory({"real": data})
    noise = lambda n, seed: {"z": tf.random.stateless_normal([n, 3], seed)}  # noqa: E731
    unbroken = list(training_stream(10, take, 4, seed=7, noise=noise).take(6).as_numpy_iterator())
    resumed = list(training_stream(10, take, 4, seed=7, start_step=3, noise=noise).take(3).as_numpy_iterator())
    for a, b in zip(unbroken[3:], resumed):
        np.testing.assert_array_equal(a["real"], b["real"])
        np.testing.assert_array_equal(a["z"], b["z"])
    # each pass visits every example once, in a different order per pass
    first_pass = np.concatenate([unbroken[0]["real"], unbroken[1]["real"]])[:, 0]
    assert len(set(first_pass.tolist())) == 8
    other_seed = next(training_stream(10, take, 4, seed=8, noise=noise).as_numpy_iterator())
    assert not np.array_equal(other_seed["z"], unbroken[0]["z"])


def test_a_stream_of_fresh_examples_numbers_each_pass_apart_and_resumes_exactly():
    take = lambda index: {"index": index}  # noqa: E731  (SRGAN's crops: a crop drawn from (seed, index))
    indices = np.concatenate([b["index"] for b in training_stream(5, take, 5, seed=3, fresh_each_pass=True)
                              .take(3).as_numpy_iterator()])
    for p in range(3):  # pass p: every example once, numbered p * 5 + i, so its crops are new
        assert sorted(indices[5 * p:5 * p + 5].tolist()) == list(range(5 * p, 5 * p + 5))
    resumed = next(training_stream(5, take, 5, seed=3, start_step=2, fresh_each_pass=True).as_numpy_iterator())
    np.testing.assert_array_equal(resumed["index"], indices[10:])
    plain = np.concatenate([b["index"] for b in training_stream(5, take, 5, seed=3).take(3).as_numpy_iterator()])
    assert sorted(plain[10:].tolist()) == list(range(5))  # data in memory: every pass visits rows 0..4


def test_a_file_that_fails_to_decode_mid_stream_is_dropped_not_fatal():
    def take(index):
        tf.debugging.assert_none_equal(index, tf.constant(2, tf.int64), message="undecodable")
        return {"real": tf.cast(index, tf.float32)}

    values = [b["real"] for b in training_stream(5, take, 1, seed=0).take(8).as_numpy_iterator()]
    assert 2.0 not in np.concatenate(values) and len(values) == 8


def test_the_one_private_keras_hook_still_exists_with_the_signature_we_override():
    """common.gan.GAN overrides Keras' private Trainer._maybe_symbolic_build (under MultiWorkerMirroredStrategy
    fit() would trace the model on a dict batch reduced across replicas, which fails; see the override). Were Keras to rename or reshape it, the override would
    silently stop applying: this fails first."""
    import inspect

    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    from common.gan import GAN

    theirs = inspect.signature(TensorFlowTrainer._maybe_symbolic_build)
    assert list(theirs.parameters) == ["self", "iterator", "data_batch"]
    assert list(inspect.signature(GAN._maybe_symbolic_build).parameters) == list(theirs.parameters)
    assert "_maybe_symbolic_build(" in inspect.getsource(TensorFlowTrainer.fit)  # and fit() still calls it


def test_the_named_seed_streams_of_one_step_never_meet():
    from common import seeds

    key = tf.constant([7, 123], tf.int64)
    np.testing.assert_array_equal(seeds.stream(key, seeds.PENALTY_MIX).numpy(), [7, 123 + (2 << 40)])
    # the draws of one training step (common.gan, and PGAN's step) use distinct streams far apart
    for streams in ((seeds.LATENT, seeds.CONDITION_LABELS, seeds.STABILIZER_UNIFORMS, seeds.INSTANCE_NOISE,
                     seeds.AVERAGE_STATISTICS),
                    (seeds.LATENT, seeds.G_LATENT, seeds.PENALTY_MIX)):
        gaps = np.diff(sorted(streams))
        assert len(set(streams)) == len(streams) and gaps.min() >= 1 << 40
    # Age-cGAN's encoder keys start past any GAN stage's steps of the same run and stay below the streams
    assert 100_000 < seeds.ENCODER_STEPS < (1 << 40) - 10**9
    # the run-level offsets pick different faces and latents
    offsets = (seeds.OPTIMIZE_FACES, seeds.HELD_OUT_WIKI, seeds.EVAL_LATENTS, seeds.HELD_OUT_IDENTITIES,
               seeds.SIX_AGES_IDENTITIES)
    assert len(set(offsets)) == len(offsets)
    assert seeds.phase_seed(3, 2) == 3002  # the measured PGAN figures used seed * 1000 + phase


def test_a_schedule_is_built_once_from_the_flags_and_cannot_be_changed_in_place():
    import dataclasses

    import pytest

    from common.cli import base_parser
    from common.train import Schedule

    args = base_parser("vanilla_gan", "", ("train",)).parse_args(
        ["--epochs", "3", "--batch-size", "8", "--seed", "4", "--resume", "runs/x"])
    schedule = Schedule.from_args(args)
    assert (schedule.epochs, schedule.batch_size, schedule.seed, schedule.resume) == (3, 8, 4, True)
    assert schedule.steps_per_epoch is None and schedule.flags["epochs"] == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.epochs = 5
    with pytest.raises(TypeError):
        schedule.flags["epochs"] = 5  # the flags TensorBoard records are read-only too
    args.epochs = 7  # a later change of the Namespace does not reach the schedule
    assert schedule.epochs == 3 and schedule.flags["epochs"] == 3
    longer = dataclasses.replace(schedule, epochs=16, resume=False)  # e.g. SRGAN's pretraining phase
    assert (longer.epochs, longer.resume, longer.batch_size) == (16, False, 8)
    with pytest.raises(ValueError, match="epochs"):
        dataclasses.replace(schedule, epochs=0)


def test_a_runs_settled_flags_are_one_frozen_typed_config_that_the_stages_cannot_change():
    import dataclasses

    import pytest

    from common.cli import base_parser, frozen_flags
    from common.train import Schedule

    args = base_parser("age_cgan", "", ("gan",)).parse_args(["--epochs", "3", "--seed", "4"])
    flags = frozen_flags(args)
    assert type(flags).__name__ == "AgeCganFlags" and (flags.epochs, flags.seed, flags.data) == (3, 4, None)
    types = {field.name: field.type for field in dataclasses.fields(flags)}
    assert types["epochs"] is int and types["chapter"] is str
    with pytest.raises(dataclasses.FrozenInstanceError):
        flags.epochs = 5
    args.epochs = 7  # the Namespace it was built from is not the run's config any more
    assert flags.epochs == 3 and vars(flags)["epochs"] == 3
    assert Schedule.from_args(flags).epochs == 3  # the common/ builders take it as they take a Namespace
    assert dataclasses.replace(flags, epochs=9).epochs == 9 and flags.epochs == 3


def test_every_chapter_hands_its_training_stages_the_frozen_config_not_the_namespace(tmp_path, monkeypatch):
    """main() of the chapters with their own stage code (Age-cGAN, PGAN, SRGAN, 3D-GAN) parses, settles the flags
    and hands the stage code a frozen dataclass: the stage entry points are replaced by recorders here, so nothing
    trains; a main.py that passed the Namespace again fails this."""
    import dataclasses

    from conftest import ROOT, run_main

    from chapters.age_cgan import main as age_main, stages as age_stages
    from chapters.gan_3d import main as voxel_main, stages as voxel_stages
    from chapters.pgan import main as pgan_main, training as pgan_training
    from chapters.srgan import main as sr_main, stages as sr_stages

    handed = {}
    monkeypatch.setattr(age_stages.Stages, "gan", lambda self: handed.setdefault("age_cgan", self.args))
    monkeypatch.setattr(pgan_training.Trainer, "train", lambda self: handed.setdefault("pgan", self.args) and {})
    monkeypatch.setattr(sr_stages, "train", lambda args, run, data: handed.setdefault("srgan", args))
    monkeypatch.setattr(voxel_stages, "train", lambda volumes, run, args: handed.setdefault("gan_3d", args))
    runs = {
        age_main: ["--stage", "gan", "--width", "0.125", "--num-faces", "48", "--epochs", "2"],
        pgan_main: ["--max-resolution", "8", "--faces", "8", "--latent-dim", "8", "--max-filters", "4"],
        sr_main: ["--residual-blocks", "1", "--hr-size", "48", "--batch-size", "2", "--content-loss", "mse",
                  "--eval-data", ROOT / "tests" / "fixtures" / "srgan_held_out", "--epochs", "2"],
        voxel_main: ["--cube-len", "32", "--num-shapes", "16", "--epochs", "2"],
    }
    for index, (module, argv) in enumerate(runs.items()):
        assert run_main(module.main, [*argv, "--run-dir", tmp_path / f"run{index}"]) == 0, module.__name__
    assert set(handed) == {"age_cgan", "pgan", "srgan", "gan_3d"}
    for chapter, args in handed.items():
        assert dataclasses.is_dataclass(args) and type(args).__dataclass_params__.frozen, chapter
        assert args.chapter == chapter and args.seed == 0
    assert (handed["age_cgan"].epochs, handed["srgan"].epochs, handed["gan_3d"].epochs) == (2, 2, 2)


def test_a_stream_without_examples_is_the_noise_of_each_step_from_the_start_step():
    """A stage that learns from its own draws (Age-cGAN's encoder): batch s is noise(batch, (seed, s)), so a resumed
    stage draws what an unbroken one would."""
    import pytest

    from common.data.stream import training_stream

    def noise(batch_size, key):
        return {"key": tf.tile(key[None], [batch_size, 1])}

    batches = list(training_stream(0, None, 4, 7, start_step=3, noise=noise).take(2))
    assert [b["key"].numpy().tolist() for b in batches] == [[[7, 3]] * 4, [[7, 4]] * 4]
    with pytest.raises(ValueError, match="noise"):
        training_stream(0, None, 4, 7)
