"""The training driver every chapter hands its GAN to: run dir, resume, callbacks, fit()."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import types
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from common.callbacks import LossHistory, NanGuard, SampleGrid, SaveEveryEpoch
from common.checkpoints import Checkpoints
from common.data.stream import Example, training_stream
from common.devices import is_chief
from common.gan import GAN
from common.run import Run
from common.tensorboard import TensorBoardWriter


def fixed_latents(count: int, latent_dim: int, seed: int) -> np.ndarray:
    """The same latent batch every epoch (and in `--stage sample` with the same seed)."""
    return np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How a training stage runs: the few numbers fit_gan reads, fixed once (a stage of a chapter with several,
    e.g. SRGAN's pretraining, is the run's schedule with other epochs: `dataclasses.replace`)."""

    epochs: int
    batch_size: int
    seed: int
    steps_per_epoch: int | None = None  # None: one pass over the examples
    resume: bool = False  # go on from the run's newest checkpoint
    checkpoints_kept: int = 3
    flags: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # TensorBoard's record of the run's flags
    # epochs of the run counted before this stage (PGAN numbers its checkpoints on across its growth phases): the
    # stage trains epochs first_epoch + 1 .. epochs, its data and noise from its own step 0
    first_epoch: int = 0
    # what a resume of a finished stage says ({run}, {epochs} and {steps} trained), naming the flag that goes on
    finished: str = "{run} has already trained {epochs} epochs; pass --epochs N (N > {epochs}) to go on"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "checkpoints_kept"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Schedule.{name} must be at least 1, got {getattr(self, name)}")
        object.__setattr__(self, "flags", types.MappingProxyType(dict(self.flags)))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Schedule":
        """The schedule of common.cli.base_parser's flags (--epochs, --batch-size, --seed, --steps-per-epoch,
        --resume, --checkpoints-kept); every flag goes to TensorBoard's config text."""
        return cls(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                   steps_per_epoch=args.steps_per_epoch or None, resume=bool(args.resume),
                   checkpoints_kept=args.checkpoints_kept, flags=vars(args))


def fit_gan(gan: GAN, run: Run, schedule: Schedule, strategy: tf.distribute.Strategy, num_examples: int,
            take: Callable[[tf.Tensor], Example] | None, sample: Callable[[], np.ndarray] | None = None,
            render: Callable[[np.ndarray], np.ndarray] | None = None,
            callbacks: Sequence[keras.callbacks.Callback] = (), log: Callable[[str], None] = print,
            fresh_each_pass: bool = False, resumed_at: int | None = None) -> dict:
    """Trains `gan` (built and compiled under `strategy`) for schedule.epochs; resumes when schedule.resume.

    `take(index)` gives example `index` of `num_examples`; with fresh_each_pass (random crops) it is called with
    pass * num_examples + index instead (see common.data.stream.training_stream). take None: a stage that trains
    on its own draws (`gan.noise`) alone, in epochs of schedule.steps_per_epoch.

    `gan` is any keras.Model with the trainer's hooks GAN has: noise, build_optimizers, checkpoint_items,
    saved_models, training_callbacks, graph, and sample (or pass `sample`).

    resumed_at: the caller has restored the stage itself (PGAN's checkpoints hold the layers of every level grown so
    far) and it goes on after this epoch; fit_gan then does not restore.

    Returns the logs of the last epoch ({} when the run had already finished).
    """
    chief = is_chief(strategy)
    if take is None and not schedule.steps_per_epoch:
        raise ValueError("a stage without examples (take None) needs schedule.steps_per_epoch")
    steps = schedule.steps_per_epoch or max(1, num_examples // schedule.batch_size)
    with strategy.scope():
        gan.build_optimizers()
        checkpoints = Checkpoints(run, gan.checkpoint_items(), keep=schedule.checkpoints_kept, chief=chief)
    if resumed_at is not None:
        initial_epoch = resumed_at
    else:
        initial_epoch = checkpoints.restore(log) if schedule.resume else 0
    run.commit_config()  # after the restore: a resume that fails leaves the run's config.json as it was
    if initial_epoch and resumed_at is None:
        log(f"resumed {run} at epoch {initial_epoch} (step {initial_epoch * steps}) from {checkpoints.latest}")
    if initial_epoch >= schedule.epochs:
        log(schedule.finished.format(run=run, epochs=initial_epoch, steps=initial_epoch * steps))
        return {}

    writer = TensorBoardWriter(run, enabled=chief)
    if not initial_epoch:
        writer.config(dict(schedule.flags))
        writer.graph(*gan.graph())
    if sample is None:
        latents = fixed_latents(64, gan.latent_dim, schedule.seed)
        sample = lambda: gan.sample(latents)  # noqa: E731
    stream = training_stream(num_examples, take, schedule.batch_size, schedule.seed,
                             start_step=(initial_epoch - schedule.first_epoch) * steps, noise=gan.noise,
                             fresh_each_pass=fresh_each_pass).take((schedule.epochs - initial_epoch) * steps)
    # Order matters: nothing is saved after a NaN, and extra callbacks (e.g. evaluation) add their numbers to
    # the epoch's logs before they are written out.
    keep = [*gan.training_callbacks(), NanGuard(checkpoints), SaveEveryEpoch(checkpoints, run, gan.saved_models(), chief),
            *callbacks]
    if chief:
        keep += [LossHistory(run, writer, initial_epoch), SampleGrid(run, writer, sample, render=render)]
    log(f"training {schedule.epochs - initial_epoch} epochs of {steps} steps, batch {schedule.batch_size}; "
        f"run: {run}  (TensorBoard: make tensorboard)")
    history = gan.fit(stream, epochs=schedule.epochs, steps_per_epoch=steps, initial_epoch=initial_epoch,
                      callbacks=keep, shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
    last = {k: float(v[-1]) for k, v in history.history.items()}
    log(f"done: {run}  last epoch: " + ", ".join(f"{k} {v:.4f}" for k, v in last.items()))
    if chief:
        log(f"samples: {run.samples / f'epoch_{schedule.epochs:04d}.png'}  " + "  ".join(
            f"{name}: {run.model_path(name)}" for name in gan.saved_models()))
    else:
        log("this worker is not the chief: checkpoints, samples and models are written by worker 0")
    return last


def sample_stage(run: Run, chapter: str, num: int, seed: int, out: str | None = None, overwrite: bool = False,
                 log: Callable[[str], None] = print) -> str:
    """`--stage sample`: loads models/generator.keras (safe mode) and writes a grid of `num` images of the latents
    `seed` draws, to `out` (never over a file without `overwrite`) or <run>/samples/sample_seed<seed>.png."""
    from common.checkpoints import check_model_io, load_model
    from common.cli import PYTHON
    from common.images import save_grid
    from common.run import output_file

    out = output_file(out, overwrite) if out else run.samples / f"sample_seed{seed}.png"
    path = run.model_path("generator")
    generator = check_model_io(load_model(path, f"train first: {PYTHON} chapters/{chapter}/main.py "
                                                f"--run-dir {run}"), path, "a generator of z", inputs=1, input_rank=2)
    latent_dim = generator.inputs[0].shape[-1]
    images = generator.predict(fixed_latents(num, latent_dim, seed), batch_size=64, verbose=0)
    save_grid(out, images)
    log(f"wrote {num} samples (seed {seed}) to {out}")
    return str(out)
