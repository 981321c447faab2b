"""Callbacks every GAN run uses: NaN guard, checkpoints + saved models, sample grids, loss history."""
from __future__ import annotations

import csv
import math
import time
from typing import Callable, Mapping

import keras
import numpy as np

from common.checkpoints import Checkpoints, explain_write_failure, save_model
from common.errors import TrainingDiverged
from common.images import make_grid, save_png
from common.run import Run, atomic_write_text
from common.tensorboard import TensorBoardWriter


class NanGuard(keras.callbacks.Callback):
    """Stops at the first non-finite loss, before anything is saved, naming the last good checkpoint."""

    def __init__(self, checkpoints: Checkpoints) -> None:
        super().__init__()
        self.checkpoints = checkpoints
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        check_finite(logs or {}, f"epoch {self.epoch + 1}, step {batch + 1}", self.checkpoints.latest)


def check_finite(values: Mapping[str, float], where: str, last_checkpoint: str | None) -> None:
    """The NaN guard of the training loop (NanGuard, after every step): the first non-finite loss stops the run,
    before anything is saved, with one sentence naming the last good checkpoint."""
    for name, value in values.items():
        if not math.isfinite(float(value)):
            kept = last_checkpoint or "none yet (no checkpoint had been written)"
            raise TrainingDiverged(f"{name} became {float(value)} in {where}; nothing was saved after it. Last good "
                                   f"checkpoint: {kept}. Try a lower learning rate or another seed.")


class SaveEveryEpoch(keras.callbacks.Callback):
    """At each epoch's end: a checkpoint (for --resume) and `.keras` models (for inference)."""

    def __init__(self, checkpoints: Checkpoints, run: Run, models: dict[str, keras.Model], chief: bool = True) -> None:
        super().__init__()
        self.checkpoints, self.run, self.models, self.chief = checkpoints, run, models, chief

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with explain_write_failure(self.run, f"epoch {epoch + 1}", self.checkpoints.latest):
            self.checkpoints.save(epoch + 1)
            if self.chief:
                for name, model in self.models.items():
                    save_model(model, self.run.model_path(name))


class SampleGrid(keras.callbacks.Callback):
    """A grid of images from fixed inputs after every epoch: samples/epoch_0001.png and TensorBoard."""

    def __init__(self, run: Run, writer: TensorBoardWriter, sample: Callable[[], np.ndarray],
                 columns: int | None = None, render: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__()
        self.run, self.writer, self.sample, self.columns = run, writer, sample, columns
        self.render = render or (lambda images: make_grid(images, self.columns))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        picture = self.render(np.asarray(self.sample()))
        save_png(self.run.samples / f"epoch_{epoch + 1:04d}.png", picture)
        self.writer.image("samples", picture, step=epoch + 1)


class LossHistory(keras.callbacks.Callback):
    """Per-epoch logs to TensorBoard and history.csv, and a loss-curve PNG (redrawn at most every
    `plot_every_s` seconds and at the end: drawing it costs ~0.3 s, and an epoch can be a 2-s PGAN tick); survives
    --resume."""

    def __init__(self, run: Run, writer: TensorBoardWriter, initial_epoch: int = 0, plot_every_s: float = 30.0) -> None:
        super().__init__()
        self.run, self.writer, self.plot_every_s = run, writer, plot_every_s
        self.path = run.root / "history.csv"
        self.rows = [r for r in self._read() if int(r["epoch"]) <= initial_epoch]  # drop epochs lost to a kill
        self.plotted = -math.inf  # time.monotonic() of the last plot

    def _read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items()}
        values.update(self._learning_rates())
        self.writer.scalars(values, step=epoch + 1)
        self.rows.append({"epoch": str(epoch + 1), **{k: f"{v:.6g}" for k, v in values.items()}})
        fields = list(dict.fromkeys(k for row in self.rows for k in row))
        lines = [",".join(fields)] + [",".join(row.get(f, "") for f in fields) for row in self.rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")
        if time.monotonic() - self.plotted >= self.plot_every_s:
            self._plot()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.rows:
            self._plot()

    def _plot(self) -> None:
        plot_history(self.rows, self.run.root / "loss.png")
        self.plotted = time.monotonic()

    def _learning_rates(self) -> dict[str, float]:
        rates = {}
        for name in ("d_optimizer", "g_optimizer", "e_optimizer"):
            optimizer = getattr(self.model, name, None)
            if optimizer is not None:
                rates[f"lr/{name.split('_')[0]}"] = float(np.asarray(optimizer.learning_rate))
        return rates


def plot_history(rows: list[dict[str, str]], path) -> None:
    """One line per loss over epochs (learning rates, evaluation scores and progress counters left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in rows]
    names = [k for k in rows[-1] if k != "epoch" and not k.startswith(("lr/", "eval/", "progress/"))]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    for name in names:
        axis.plot(epochs, [float(r.get(name) or "nan") for r in rows], marker="o", markersize=3, label=name)
    axis.set_xlabel("epoch")
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    tmp.replace(path)
