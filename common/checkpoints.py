"""Checkpoints that survive a kill, and `.keras` models that load in a fresh process.

tf.train.CheckpointManager writes a checkpoint's files first and only then rewrites the small `checkpoint`
state file (atomically) that names the latest one; a process killed halfway leaves the previous checkpoint as
the latest. `.keras` files are written to a temporary name and renamed.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import keras
import tensorflow as tf

from common.errors import UserError
from common.run import Run


class Checkpoints:
    """Models, optimizers (with their step counters) and the epoch, kept as the last `keep` checkpoints."""

    def __init__(self, run: Run, items: dict[str, Any], keep: int = 3, chief: bool = True) -> None:
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(epoch=self.epoch, **items)
        # In a multi-worker run every worker takes part in saving; only the chief's copy is kept.
        folder = run.checkpoints if chief else Path(tempfile.mkdtemp(prefix="worker-ckpt-"))
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(folder), max_to_keep=keep)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore(self) -> int:
        """Loads the latest checkpoint and returns the number of finished epochs."""
        if self.latest is None:
            raise UserError(f"no checkpoint in {self.manager.directory} to resume from")
        try:
            self.checkpoint.restore(self.latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise UserError(f"checkpoint {self.latest} does not fit these models (were the flags that shape "
                            f"the networks changed?): {str(error).splitlines()[0]}") from None
        return int(self.epoch.numpy())

    def save(self, epoch: int) -> str:
        self.epoch.assign(epoch)
        return self.manager.save(checkpoint_number=epoch)


@contextlib.contextmanager
def explain_write_failure(run: Run, what: str, checkpoints: Checkpoints) -> Iterator[None]:
    """Turns a failed write (disk full, quota, a vanished mount) into one sentence saying what was kept."""
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        reason = getattr(error, "strerror", None) or str(getattr(error, "message", error)).split(";")[-1].strip()
        raise UserError(f"could not save {what} in {run} ({reason}); the last complete checkpoint is kept "
                        f"({checkpoints.latest or 'none yet'}): free some space, then continue with --resume "
                        f"{run}") from None


def save_model(model: keras.Model, path: Path) -> Path:
    """Writes `path` (.keras) via a temporary file, so a reader never loads half a model."""
    tmp = path.with_name(f".{path.stem}-partial.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_model(path: str | os.PathLike, how_to_make: str) -> keras.Model:
    """Loads a saved `.keras` model with safe_mode (no arbitrary code); `how_to_make` names the command."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; {how_to_make}")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except (ValueError, OSError, TypeError) as error:
        raise UserError(f"cannot load {path} ({str(error).splitlines()[0]})") from None
