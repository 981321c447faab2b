"""Train steps: the chapters' compiled `train_step` against the book's `train_on_batch` loop, same networks.

Ours is what `common.train.fit_gan` runs: the chapter's keras.Model subclass, compiled, with
`model.make_train_function()` called on a `training_stream` iterator (in-memory data), one step per call
(Keras' `fit` with steps_per_execution 1). The book's loop is the book's code in Keras 3, with the one change
Keras 3 needs for D to train at all:

  D.compile(optimizer, "binary_crossentropy"); D.trainable = False
  combined = Model(z, D(G(z))); combined.compile(optimizer, "binary_crossentropy")
  per step: fake = G.predict_on_batch(z)
            D.trainable = True;  D.train_on_batch(real, ones); D.train_on_batch(fake, zeros)
            D.trainable = False; combined.train_on_batch(z, ones)

Keras 3 fixes a model's trainable variables when its train function is first traced (its first
train_on_batch), not at compile time. In the book's order D's first train_on_batch comes after
`D.trainable = False`, so D never trains. Setting `D.trainable = True` before D's batches (as above) makes the
first trace of D's function see D's weights and the first trace of the combined model's function see only
G's: two compiled views of one D. `verify()` checks it on every chapter before timing: D's update changes D,
and the combined update changes G and leaves D alone.

The book's samplers are given their fastest form: in-memory float32 arrays indexed per step, and
`predict_on_batch` where the book calls `predict` (which builds a tf.data pipeline on every call in Keras 3).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bench.common import interleave, summary

DATASET_SIZE = 256  # examples held in memory per chapter (random values: speed does not depend on them)


@dataclass
class Case:
    name: str
    what: str
    batch: int
    ours: Callable[[], None]
    book: "BookLoop"
    steps: int  # steps per timed unit (per side per round)
    max_rounds: int = 99  # the slowest chapters take fewer rounds to stay in the time budget


class BookLoop:
    """The book's loop over (G, D, combined) with the trainable toggling that makes D train under Keras 3."""

    def __init__(self, generator, discriminator, combined, sample: Callable[[np.random.Generator], dict],
                 d_out_shape: tuple[int, ...], extra_targets: Callable[[dict], list] | None = None) -> None:
        self.g, self.d, self.combined = generator, discriminator, combined
        self.sample, self.extra_targets = sample, extra_targets
        self.rng = np.random.default_rng(0)
        self.ones = np.ones(d_out_shape, np.float32)
        self.zeros = np.zeros(d_out_shape, np.float32)

    def d_update(self, batch: dict) -> float:
        fake = self.g.predict_on_batch(batch["g_in"])
        self.d.trainable = True
        loss_real = self.d.train_on_batch(batch["d_real"], self.ones)
        loss_fake = self.d.train_on_batch(batch["d_fake"](fake), self.zeros)
        return 0.5 * (float(np.asarray(loss_real).ravel()[0]) + float(np.asarray(loss_fake).ravel()[0]))

    def g_update(self, batch: dict) -> float:
        self.d.trainable = False
        targets = self.ones if self.extra_targets is None else [self.ones, *self.extra_targets(batch)]
        loss = self.combined.train_on_batch(batch["c_in"], targets)
        return float(np.asarray(loss).ravel()[0])

    def step(self) -> None:
        batch = self.sample(self.rng)
        self.d_update(batch)
        self.g_update(batch)

    def verify(self) -> dict:
        """One step in two halves: D's update must change D; the combined update must change G, not D."""
        batch = self.sample(self.rng)
        d_before = [w.numpy().copy() for w in self.d.weights]
        self.d_update(batch)
        d_after = [w.numpy().copy() for w in self.d.weights]
        g_before = [w.numpy().copy() for w in self.g.trainable_weights]
        self.g_update(batch)
        d_changed = any(not np.array_equal(a, b) for a, b in zip(d_before, d_after))
        g_changed = any(not np.array_equal(a, w.numpy()) for a, w in zip(g_before, self.g.trainable_weights))
        d_frozen = all(np.array_equal(a, w.numpy()) for a, w in zip(d_after, self.d.weights))
        assert d_changed, "book loop: D's train_on_batch did not change D's weights"
        assert g_changed, "book loop: the combined model's train_on_batch did not change G's weights"
        assert d_frozen, "book loop: the combined model's train_on_batch changed D's weights"
        return {"d_weights_change_on_d_update": d_changed, "g_weights_change_on_g_update": g_changed,
                "d_unchanged_on_g_update": d_frozen}


def _compile_book(generator, discriminator, g_inputs, d_optimizer, g_optimizer, extra_outputs=None,
                  losses=None, loss_weights=None):
    """The book's set-up: compile D, freeze it, build and compile G+D (D's output first)."""
    import keras

    discriminator.compile(optimizer=d_optimizer, loss="binary_crossentropy")
    discriminator.trainable = False
    inputs = g_inputs if isinstance(g_inputs, list) else [g_inputs]
    fake = generator(inputs if len(inputs) > 1 else inputs[0])
    verdict = discriminator([fake, inputs[1]] if len(inputs) > 1 else fake)
    outputs = [verdict, *(extra_outputs(fake) if extra_outputs else [])]
    combined = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else verdict)
    combined.compile(optimizer=g_optimizer, loss=losses or "binary_crossentropy", loss_weights=loss_weights)
    return combined


def _ours(model, arrays: dict, batch: int, transform=None) -> Callable[[], None]:
    """The chapter's compiled train_step fed by common.data.stream.training_stream, as fit() runs it."""
    from common.data.stream import in_memory, training_stream

    n = len(next(iter(arrays.values())))
    model.build_optimizers()
    stream = training_stream(n, in_memory(arrays, transform), batch, seed=0, noise=model.noise)
    iterator = iter(stream)
    model.make_train_function()
    function = model.train_function

    def step() -> None:
        logs = function(iterator)
        float(next(iter(logs.values())))  # wait for the step (and fail loudly on a broken one)

    return step


def _images(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-1, 1, (DATASET_SIZE, *shape)).astype(np.float32)


# --- the chapters -----------------------------------------------------------------------------------------

def vanilla(quick: bool) -> Case:
    import keras

    from chapters.vanilla_gan import models
    from common.gan import GAN

    batch, latent = 32, 100
    rng = np.random.default_rng(0)
    real = _images(rng, models.IMAGE_SHAPE)
    keras.utils.set_random_seed(0)
    gan = GAN(models.build_generator(latent), models.build_discriminator(), latent)
    gan.compile(d_optimizer=models.optimizer(), g_optimizer=models.optimizer())
    ours = _ours(gan, {"real": real}, batch)

    keras.utils.set_random_seed(0)
    g, d = models.build_generator(latent), models.build_discriminator()
    combined = _compile_book(g, d, keras.Input((latent,)), models.optimizer(), models.optimizer())

    def sample(r):
        return {"g_in": r.standard_normal((batch, latent)).astype(np.float32),
                "c_in": r.standard_normal((batch, latent)).astype(np.float32),
                "d_real": real[r.integers(0, DATASET_SIZE, batch)], "d_fake": lambda fake: fake}

    return Case("vanilla", "vanilla GAN, dense 500-500, MNIST 28x28, Adam", batch, ours,
                BookLoop(g, d, combined, sample, (batch, 1)), steps=10 if quick else 25)


def anime(quick: bool) -> Case:
    import keras

    from chapters.anime_dcgan import models
    from common.gan import GAN

    batch, latent, size = 32, 100, 64
    rng = np.random.default_rng(0)
    real = _images(rng, (size, size, 3))
    keras.utils.set_random_seed(0)
    gan = GAN(models.build_generator("book", size, latent), models.build_discriminator("book", size), latent)
    d_opt, g_opt = models.optimizers("book")
    gan.compile(d_optimizer=d_opt, g_optimizer=g_opt)
    ours = _ours(gan, {"real": real}, batch)

    keras.utils.set_random_seed(0)
    g, d = models.build_generator("book", size, latent), models.build_discriminator("book", size)
    d_opt, g_opt = models.optimizers("book")
    combined = _compile_book(g, d, keras.Input((latent,)), d_opt, g_opt)

    def sample(r):
        return {"g_in": r.standard_normal((batch, latent)).astype(np.float32),
                "c_in": r.standard_normal((batch, latent)).astype(np.float32),
                "d_real": real[r.integers(0, DATASET_SIZE, batch)], "d_fake": lambda fake: fake}

    return Case("anime_dcgan", "anime DCGAN, the book's pair at 64x64, Nesterov SGD", batch, ours,
                BookLoop(g, d, combined, sample, (batch, 1)), steps=1, max_rounds=4)


def srgan(quick: bool) -> Case:
    import keras

    from chapters.srgan import models
    from chapters.srgan.images import quantize

    batch, hr_size = 8, 96
    lr_size = hr_size // models.SCALE
    rng = np.random.default_rng(0)
    hr = _images(rng, (hr_size, hr_size, 3))[:64]
    lr = quantize(models.downsample(hr)).numpy()
    keras.utils.set_random_seed(0)
    vgg = models.build_vgg_features(None, "block3_conv3")  # random weights: the speed is the same
    gan = models.SRGAN(models.build_generator(16), models.build_discriminator(), models.ContentLoss(vgg))
    gan.compile(d_optimizer=models.optimizer(), g_optimizer=models.optimizer())
    ours = _ours(gan, {"lr": lr, "hr": hr}, batch)

    keras.utils.set_random_seed(0)
    g, d = models.build_generator(16), models.build_discriminator()
    book_vgg = models.build_vgg_features(None, "block3_conv3")
    patch = d.compute_output_shape((batch, hr_size, hr_size, 3))[1:]
    combined = _compile_book(g, d, keras.Input((lr_size, lr_size, 3)), models.optimizer(), models.optimizer(),
                             extra_outputs=lambda fake: [book_vgg(fake)], losses=["binary_crossentropy", "mse"],
                             loss_weights=[1e-3, 1.0])

    def sample(r):
        pick = r.integers(0, len(hr), batch)
        return {"g_in": lr[pick], "c_in": lr[pick], "d_real": hr[pick], "d_fake": lambda fake: fake, "hr": hr[pick]}

    loop = BookLoop(g, d, combined, sample, (batch, *patch),
                    extra_targets=lambda b: [book_vgg.predict_on_batch(b["hr"])])
    return Case("srgan", "SRGAN 24->96, 16 residual blocks, VGG19 block3_conv3 content loss (random VGG weights)",
                batch, ours, loop, steps=1, max_rounds=3)


def gan_3d(quick: bool) -> Case:
    import keras

    from chapters.gan_3d import models

    batch, cube = 8, 32
    rng = np.random.default_rng(0)
    real = (rng.uniform(size=(64, cube, cube, cube, 1)) > 0.7).astype(np.float32)
    book_rates = dict(g_lr=0.0025, d_lr=1e-5, g_beta1=0.5, d_beta1=0.9)
    keras.utils.set_random_seed(0)
    gan = models.VoxelGAN(models.build_generator(cube), models.build_discriminator(cube), d_acc_threshold=1.0)
    d_opt, g_opt = models.optimizers(**book_rates)
    gan.compile(d_optimizer=d_opt, g_optimizer=g_opt)
    ours = _ours(gan, {"real": real}, batch)

    keras.utils.set_random_seed(0)
    g, d = models.build_generator(cube), models.build_discriminator(cube)
    d_opt, g_opt = models.optimizers(**book_rates)
    combined = _compile_book(g, d, keras.Input((1, 1, 1, models.LATENT_DIM)), d_opt, g_opt)

    def sample(r):
        z = lambda: (0.33 * r.standard_normal((batch, 1, 1, 1, models.LATENT_DIM))).astype(np.float32)  # noqa: E731
        return {"g_in": z(), "c_in": z(), "d_real": real[r.integers(0, len(real), batch)], "d_fake": lambda f: f}

    return Case("gan_3d", "3D-GAN 32^3, the book's filters (width 1), the book's Adam rates", batch, ours,
                BookLoop(g, d, combined, sample, (batch, 1)), steps=1, max_rounds=4)


def age_cgan(quick: bool) -> Case:
    import keras

    from chapters.age_cgan import models
    from common.gan import ConditionalGAN

    batch, classes = 32, models.NUM_CLASSES
    rng = np.random.default_rng(0)
    real = _images(rng, models.IMAGE_SHAPE)
    labels = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, DATASET_SIZE)]
    keras.utils.set_random_seed(0)
    gan = ConditionalGAN(models.build_generator(), models.build_discriminator(), models.LATENT_DIM, classes)
    gan.compile(d_optimizer=models.optimizer(), g_optimizer=models.optimizer())
    ours = _ours(gan, {"real": real, "labels": labels}, batch)

    keras.utils.set_random_seed(0)
    g, d = models.build_generator(), models.build_discriminator()
    combined = _compile_book(g, d, [keras.Input((models.LATENT_DIM,)), keras.Input((classes,))],
                             models.optimizer(), models.optimizer())

    def sample(r):
        pick = r.integers(0, DATASET_SIZE, batch)
        fake_labels = np.eye(classes, dtype=np.float32)[r.integers(0, classes, batch)]
        z = r.standard_normal((batch, models.LATENT_DIM)).astype(np.float32)
        return {"g_in": [z, fake_labels], "c_in": [z, fake_labels], "d_real": [real[pick], labels[pick]],
                "d_fake": lambda fake: [fake, fake_labels]}

    return Case("age_cgan", "Age-cGAN gan stage, the book's networks (width 1) at 64x64, 6 ages", batch, ours,
                BookLoop(g, d, combined, sample, (batch, 1)), steps=1, max_rounds=4)


CHAPTERS = {"vanilla": vanilla, "anime_dcgan": anime, "srgan": srgan, "gan_3d": gan_3d, "age_cgan": age_cgan}


def run(chapters: list[str], quick: bool, rounds: int, log=print) -> dict:
    """Samples/s of our step and of the book loop per chapter (medians over interleaved rounds) and the ratio."""
    results = {}
    for name in chapters:
        import keras

        keras.backend.clear_session()
        start = time.perf_counter()
        case = CHAPTERS[name](quick)
        checks = case.book.verify()  # also the book loop's first traces
        built = time.perf_counter() - start

        def unit(step):
            def run_steps():
                for _ in range(case.steps):
                    step()
            return run_steps

        case_rounds = min(rounds, case.max_rounds)
        times = interleave({"ours": unit(case.ours), "book": unit(case.book.step)}, rounds=case_rounds, warmup=1)
        samples = case.batch * case.steps
        ours, book = summary(times["ours"], samples), summary(times["book"], samples)
        ratio = ours["per_s"] / book["per_s"]
        results[name] = {"what": case.what, "batch": case.batch, "steps_per_round": case.steps, "rounds": case_rounds,
                         "ours": ours, "book": book, "ratio": ratio, "book_loop_checks": checks,
                         "build_and_first_steps_s": round(built, 1),
                         "seconds": round(time.perf_counter() - start, 1)}
        log(f"  {name}: ours {ours['per_s']:.1f} samples/s, book loop {book['per_s']:.1f} samples/s, "
            f"ratio {ratio:.2f}x (batch {case.batch}, {case_rounds} rounds of {case.steps} step(s); "
            f"{results[name]['seconds']:.0f} s)", flush=True)
        del case
    return results
