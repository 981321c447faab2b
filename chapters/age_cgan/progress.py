"""What the GAN stage gets from common.train.fit_gan, for the encoder and optimize stages' step loops:
checkpoints that survive a kill (`--resume` goes on from the last one), TensorBoard scalars and images.

Each stage keeps its own folder inside the run: `<run>/<stage>/checkpoints/` (the last two) and writes its
TensorBoard events to `<run>/logs/<stage>/`. The steps' randomness is a function of (seed, step), so a resumed
stage ends with the same weights as an unbroken one.
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from common.checkpoints import checkpoint_candidates, restore_newest, set_aside_damaged_state
from common.run import Run


class StageProgress:
    def __init__(self, run: Run, stage: str, items: dict[str, Any], keep: int = 2) -> None:
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.checkpoint = tf.train.Checkpoint(step=self.step, **items)
        self.optimizers = [item for item in items.values() if isinstance(item, keras.optimizers.Optimizer)]
        self.folder = run.root / stage / "checkpoints"
        self.folder.mkdir(parents=True, exist_ok=True)
        set_aside_damaged_state(self.folder)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.folder), max_to_keep=keep)
        self.writer = tf.summary.create_file_writer(str(run.logs / stage))
        self.stage = stage

    def restore(self, resume: bool, log: Callable[[str], None] = print) -> int:
        """Steps already done: the newest complete checkpoint's with `resume`, else 0 (a fresh start)."""
        if not resume or not checkpoint_candidates(self.folder):
            return 0
        restore_newest(self.checkpoint, self.folder, log, optimizers=self.optimizers)
        done = int(self.step.numpy())
        log(f"[{self.stage}] resumed at step {done} from {self.manager.latest_checkpoint or self.folder}")
        return done

    @property
    def latest(self) -> str | None:
        """The newest checkpoint written (None before the first)."""
        return self.manager.latest_checkpoint

    def save(self, step: int) -> None:
        self.step.assign(step)
        self.manager.save(checkpoint_number=step)

    def log_and_save(self, step: int, values: dict[str, float], reconstructions: np.ndarray) -> None:
        """A checkpoint step of the stage: its scalars and reconstructions picture in TensorBoard, then the
        checkpoint itself."""
        self.scalars(values, step)
        self.image("x_and_G(E(x), y_x)", reconstructions, step)
        self.save(step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(f"{self.stage}/{name}", float(value))
        self.writer.flush()

    def image(self, name: str, picture: np.ndarray, step: int) -> None:
        with self.writer.as_default(step=step):
            tf.summary.image(f"{self.stage}/{name}", picture[None], max_outputs=1)
        self.writer.flush()
