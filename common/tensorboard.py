"""TensorBoard writing: scalars, image grids, the run's flags as text, hparams and the model graphs."""
from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from common.run import Run


class TensorBoardWriter:
    """One event-file writer per run (logs/train). Everything is keyed by epoch."""

    def __init__(self, run: Run, enabled: bool = True) -> None:
        self.enabled = enabled
        self.writer = tf.summary.create_file_writer(str(run.logs / "train")) if enabled else None

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if not self.enabled:
            return
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(prefix + name, float(value))
        self.writer.flush()

    def image(self, name: str, picture: np.ndarray, step: int) -> None:
        """A uint8 picture (H, W) or (H, W, C)."""
        if not self.enabled:
            return
        picture = picture[..., None] if picture.ndim == 2 else picture
        with self.writer.as_default(step=step):
            tf.summary.image(name, picture[None], max_outputs=1)
        self.writer.flush()

    def text(self, name: str, text: str, step: int = 0) -> None:
        if not self.enabled:
            return
        with self.writer.as_default(step=step):
            tf.summary.text(name, text)
        self.writer.flush()

    def config(self, config: dict[str, Any]) -> None:
        """The run's flags as a text table and as hparams (comparable across runs in the HParams tab)."""
        if not self.enabled:
            return
        self.text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True, default=str) + "\n```")
        from tensorboard.plugins.hparams import api as hparams

        simple = {k: v for k, v in config.items() if isinstance(v, (bool, int, float, str))}
        with self.writer.as_default():
            hparams.hparams(simple)
        self.writer.flush()

    def graph(self, name: str, function: Callable[[], Any]) -> None:
        """Traces `function` (which calls the models) once and writes its graph for the Graphs tab."""
        if not self.enabled:
            return
        traced = tf.function(function)
        tf.summary.trace_on(graph=True)
        traced()
        with self.writer.as_default():
            tf.summary.trace_export(name=name, step=0)
        self.writer.flush()
