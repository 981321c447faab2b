"""The stabilisation tricks: each is a loss or a serialisable layer with a known answer, and each trains."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chapters.vanilla_gan import models
from common.errors import UserError
from common.gan import GAN
from common.layers import InstanceNormalization, MinibatchDiscrimination, Pack
from common.losses import BinaryCrossEntropy, Hinge, Wasserstein
from common.stabilize import Stabilizers, check, discriminator_head, discriminator_views


def _roundtrip(layer: keras.layers.Layer, x: np.ndarray, tmp_path) -> None:
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(model(x), loaded(x), atol=1e-6)


def test_minibatch_discrimination_sees_a_collapsed_batch(tmp_path):
    layer = MinibatchDiscrimination(num_kernels=5, kernel_dim=3)
    varied = np.random.default_rng(0).normal(size=(8, 10)).astype(np.float32) * 3
    collapsed = np.repeat(varied[:1], 8, axis=0)
    out_varied, out_collapsed = layer(varied).numpy(), layer(collapsed).numpy()
    assert out_varied.shape == (8, 15)
    np.testing.assert_array_equal(out_varied[:, :10], varied)  # features pass through
    np.testing.assert_allclose(out_collapsed[:, 10:], 7.0, atol=1e-5)  # 7 identical neighbours, distance 0
    assert out_varied[:, 10:].mean() < 1.0
    _roundtrip(MinibatchDiscrimination(4, 2), varied, tmp_path)


def test_instance_normalization_normalises_each_sample_and_channel(tmp_path):
    x = np.random.default_rng(1).normal(5, 3, size=(2, 6, 6, 4)).astype(np.float32)
    y = InstanceNormalization()(x).numpy()
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-3)
    _roundtrip(InstanceNormalization(), x, tmp_path)


def test_pack_stacks_k_consecutive_samples_on_the_channel_axis(tmp_path):
    x = np.arange(4 * 2 * 2 * 1, dtype=np.float32).reshape(4, 2, 2, 1)
    y = Pack(2)(x).numpy()
    assert y.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(y[0, ..., 0], x[0, ..., 0])
    np.testing.assert_array_equal(y[0, ..., 1], x[1, ..., 0])
    np.testing.assert_array_equal(y[1, ..., 1], x[3, ..., 0])
    _roundtrip(Pack(2), x, tmp_path)


def test_losses_match_their_formulas():
    real, fake = tf.constant([[0.8], [0.6]]), tf.constant([[0.3], [0.1]])
    smooth = BinaryCrossEntropy(real_label=0.9).discriminator(real, fake).numpy()
    expected = -(0.9 * np.log([0.8, 0.6]) + 0.1 * np.log([0.2, 0.4])) - np.log([0.7, 0.9])
    np.testing.assert_allclose(smooth, expected, rtol=1e-5)
    noisy = BinaryCrossEntropy(1.0, label_noise=0.2).discriminator(real, fake, tf.constant([[1.0, 0.5], [0.0, 1.0]]))
    targets_real, targets_fake = np.array([0.8, 1.0]), np.array([0.1, 0.2])
    expected = -(targets_real * np.log([0.8, 0.6]) + (1 - targets_real) * np.log([0.2, 0.4])) \
        - (targets_fake * np.log([0.3, 0.1]) + (1 - targets_fake) * np.log([0.7, 0.9]))
    np.testing.assert_allclose(noisy.numpy(), expected, rtol=1e-5)
    scores_real, scores_fake = tf.constant([[2.0], [0.5]]), tf.constant([[-3.0], [0.0]])
    np.testing.assert_allclose(Hinge().discriminator(scores_real, scores_fake), [0.0, 1.5])
    np.testing.assert_allclose(Hinge().generator(scores_fake), [3.0, 0.0])
    np.testing.assert_allclose(Wasserstein().discriminator(scores_real, scores_fake), [-5.0, -0.5])


def _gan(options: Stabilizers) -> GAN:
    gan = GAN(models.build_generator(8, 16), models.build_discriminator(16, pack=options.pack), 8, options)
    gan.compile(models.optimizer(), models.optimizer())
    gan.build_optimizers()
    return gan


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic_and_grows_with_its_norm():
    gan = _gan(Stabilizers(loss="wgan-gp"))
    dense = gan.discriminator.get_layer("score")
    real, fake = tf.random.normal((4, 28, 28, 1)), tf.random.normal((4, 28, 28, 1))
    batch = {"penalty_mix": tf.random.uniform((4,))}
    linear = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(1, use_bias=False)])
    for norm, expected in ((1.0, 0.0), (2.0, 1.0)):
        w = np.random.default_rng(2).normal(size=(784, 1)).astype(np.float32)
        linear.layers[-1].kernel.assign(w / np.linalg.norm(w) * norm)
        gan.critic = linear
        np.testing.assert_allclose(gan.gradient_penalty(real, fake, batch), [expected] * 4, atol=1e-4)
    assert dense is not None


@pytest.mark.parametrize("options", [
    Stabilizers(label_smoothing=0.9), Stabilizers(label_noise=0.1), Stabilizers(loss="hinge"),
    Stabilizers(loss="wgan-gp"), Stabilizers(feature_matching=True), Stabilizers(minibatch_discrimination=4),
    Stabilizers(historical_averaging=0.01), Stabilizers(pack=2),
], ids=lambda o: ",".join(o.active()))
def test_every_option_trains_both_networks(options):
    gan = _gan(options)
    before = [w.numpy().copy() for w in gan.discriminator.trainable_weights + gan.generator.trainable_weights]
    batch = {"real": tf.random.uniform((8, 28, 28, 1), -1, 1), **gan.noise(8, tf.constant([1, 0], tf.int64))}
    step = tf.function(gan.train_step)
    for _ in range(2):
        logs = step(batch)
    after = gan.discriminator.trainable_weights + gan.generator.trainable_weights
    still = [a.path for b, a in zip(before, after) if np.allclose(b, a.numpy())]
    # the Wasserstein loss is blind to the critic's output bias: it cancels between real and fake
    assert still == (["score/bias"] if options.loss == "wgan-gp" else []), still
    assert all(np.isfinite(float(v)) for v in logs.values())
    if options.minibatch_discrimination:
        assert gan.discriminator.get_layer("minibatch_discrimination")
    if options.historical_averaging:
        assert int(gan.historical_count["generator"].numpy()) == 2


def test_flags_that_do_not_apply_are_refused():
    with pytest.raises(UserError, match="conditional"):
        check(Stabilizers(pack=2), conditional=True, batch_size=8)
    with pytest.raises(UserError, match="divisible"):
        check(Stabilizers(pack=3), conditional=False, batch_size=8)
    with pytest.raises(UserError, match="do not apply to --loss hinge"):
        check(Stabilizers(loss="hinge", label_smoothing=0.9), conditional=False, batch_size=8)
    patch_input = keras.Input((16, 16, 3))
    patch = keras.layers.Conv2D(8, 3, padding="same")(patch_input)
    patch_d = keras.Model(patch_input, discriminator_head(patch))
    with pytest.raises(UserError, match="scores patches"):
        discriminator_views(patch_d, Stabilizers(minibatch_discrimination=4))
    plain_input = keras.Input((4,))
    no_head = keras.Model(plain_input, keras.layers.Dense(1, activation="sigmoid")(plain_input))
    with pytest.raises(UserError, match="--feature-matching does not apply"):
        discriminator_views(no_head, Stabilizers(feature_matching=True))


def test_pack_flag_on_the_vanilla_chapter_refuses_a_bad_batch_and_trains_end_to_end(tmp_path, capsys):
    from chapters.vanilla_gan.main import main
    from conftest import run_main

    assert run_main(main, ["--pack", "3", "--batch-size", "16", "--run-dir", tmp_path / "r"]) == 2
    assert "divisible by 3" in capsys.readouterr().err
    # A packed run trains end to end, including the graph fit_gan traces for TensorBoard (a batch of K samples:
    # D cannot judge fewer).
    run_dir = tmp_path / "packed"
    assert run_main(main, ["--pack", "2", "--batch-size", "8", "--steps-per-epoch", "1", "--epochs", "1",
                           "--run-dir", run_dir]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert (run_dir / "checkpoints" / "ckpt-1.index").exists()
    tags = EventAccumulator(str(run_dir / "logs" / "train")).Reload().Tags()
    assert "generator_and_discriminator" in tags["tensors"]  # the graph of G + packed D, traced at batch 2


def test_the_generator_average_is_what_is_sampled_saved_and_resumed(tmp_path):
    """--average-generator: generator.keras holds the moving average (not the raw G), the average follows
    avg = d * avg + (1 - d) * G with the warm-up, and a split run ends with the same average as an unbroken one."""
    import tensorflow as tf

    from chapters.vanilla_gan.main import main
    from common.checkpoints import load_model
    from conftest import run_main

    def train(run, epochs, resume=False):
        argv = ["--steps-per-epoch", "4", "--batch-size", "16", "--epochs", str(epochs), "--average-generator", "0.9"]
        return run_main(main, [*argv, *(["--resume", run] if resume else ["--run-dir", run])])

    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train(whole, 2) == 0
    assert train(split, 1) == 0 and train(split, 2, resume=True) == 0
    saved = load_model(whole / "models" / "generator.keras", "").get_weights()
    raw = tf.train.load_checkpoint(str(whole / "checkpoints"))
    kernel = raw.get_tensor("g_optimizer/_trainable_variables/4/.ATTRIBUTES/VARIABLE_VALUE")  # G's last Dense
    assert kernel.shape == saved[4].shape and not np.allclose(kernel, saved[4])  # saved: not the raw G
    assert int(raw.get_tensor("generator_average_updates/.ATTRIBUTES/VARIABLE_VALUE")) == 8  # 2 epochs x 4 steps
    resumed = load_model(split / "models" / "generator.keras", "").get_weights()
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(saved, resumed))


def test_average_normalises_with_batchnorm_statistics_of_its_own_weights():
    from common.ema import GeneratorAverage
    from common.gan import ConditionalGAN

    z = keras.Input((3,))
    hidden = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(4, name="project")(z)))
    middle = keras.layers.BatchNormalization(name="bn2")(keras.layers.Dense(3, name="middle")(hidden))
    generator = keras.Model(z, keras.layers.Dense(2)(middle))
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((16, 3)).astype(np.float32) for _ in range(3)]
    with pytest.raises(ValueError, match="statistics_inputs"):
        GeneratorAverage(generator, 0.5)
    wrapped = keras.Input((3,))  # a norm inside a nested model would be missed: refused, not skipped
    with pytest.raises(ValueError, match="nested model"):
        GeneratorAverage(keras.Model(wrapped, keras.layers.Dense(2)(generator(wrapped))), 0.5, lambda: iter(batches))
    average = GeneratorAverage(generator, 0.5, statistics_inputs=lambda: iter(batches))
    for name in ("bn", "bn2"):  # the raw G's statistics, far from what the averaged weights make
        generator.get_layer(name).moving_mean.assign(np.full(generator.get_layer(name).moving_mean.shape, 50.0))
        generator.get_layer(name).moving_variance.assign(np.full(generator.get_layer(name).moving_variance.shape, 9.0))
    project = generator.get_layer("project")
    project.kernel.assign(project.kernel * 3.0 + 1.0)
    for _ in range(5):
        average.on_train_batch_end(0)
    own, own2 = average.average.get_layer("bn"), average.average.get_layer("bn2")
    assert np.allclose(own.moving_mean.numpy(), 0.0)  # not averaged in (the old average held 50 here)
    average.on_epoch_end(0)

    def dense(name, x):
        kernel, bias = (w.numpy() for w in average.average.get_layer(name).weights)
        return x @ kernel + bias

    def normalise(norm, x):
        return ((x - norm.moving_mean.numpy()) / np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
                * norm.gamma.numpy() + norm.beta.numpy())

    first = dense("project", np.concatenate(batches))  # the averaged weights' own inputs to the first norm
    np.testing.assert_allclose(own.moving_mean.numpy(), first.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(own.moving_variance.numpy(), first.var(axis=0), rtol=1e-4, atol=1e-5)
    # the second norm's inputs pass through the first norm with its new statistics (layer by layer, in order)
    second = dense("middle", np.maximum(normalise(own, first), 0.0))
    np.testing.assert_allclose(own2.moving_mean.numpy(), second.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(own2.moving_variance.numpy(), second.var(axis=0), rtol=1e-4, atol=1e-4)
    assert np.allclose(generator.get_layer("bn").moving_mean.numpy(), 50.0)  # the raw G keeps its own
    last = average.average.layers[-1]
    np.testing.assert_allclose(average.average.predict(batches[0], verbose=0),
                               normalise(own2, second[:16]) @ last.kernel.numpy() + last.bias.numpy(),
                               rtol=1e-4, atol=1e-4)

    # the GANs hand it the same inputs at every call, in the shape their G takes
    def critic():
        image = keras.Input((2,))
        return keras.Model(image, keras.layers.Dense(1, activation="sigmoid", name="score")(image))

    gan = GAN(generator, critic(), 3)
    first, second = list(gan.statistics_inputs(2, 4)), list(gan.statistics_inputs(2, 4))
    assert len(first) == 2 and first[0].shape == (4, 3) and not np.allclose(first[0], first[1])
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    label = keras.Input((5,))
    conditional = keras.Model([z, label], keras.layers.Dense(2)(keras.layers.Concatenate()([z, label])))
    labelled = next(ConditionalGAN(conditional, critic(), 3, 5).statistics_inputs(1, 4))
    assert [tuple(x.shape) for x in labelled] == [(4, 3), (4, 5)]


def test_average_update_follows_its_formula():
    import keras

    from common.ema import GeneratorAverage

    inputs = keras.Input((2,))
    generator = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros")(inputs))
    decay = 0.9
    average = GeneratorAverage(generator, decay)
    seen = []
    for step in range(1, 41):
        seen.append(float(step) ** 1.5)  # G's weights after each step
        generator.layers[1].kernel.assign(np.full((2, 1), seen[-1], np.float32))
        average.on_train_batch_end(0)
        if step == 1:  # no share for the initial weights (ones): the first average is the first step's G
            assert np.allclose(average.average.layers[1].kernel.numpy(), seen[0])
    # exactly the zero-debiased EMA of the weights seen, with the decay asked for
    n = len(seen)
    expected = sum(decay ** (n - k) * (1 - decay) * w for k, w in enumerate(seen, start=1)) / (1 - decay ** n)
    assert np.allclose(average.average.layers[1].kernel.numpy(), expected, rtol=1e-5)
    longer = sum(0.95 ** (n - k) * 0.05 * w for k, w in enumerate(seen, start=1)) / (1 - 0.95 ** n)
    assert abs(longer - expected) > 1.0  # a longer decay really gives another average
