"""Checkpoints that survive a kill, and `.keras` models that load in a fresh process.

tf.train.CheckpointManager writes a checkpoint's files first and only then rewrites the small `checkpoint`
state file (atomically) that names the latest one; a process killed halfway leaves the previous checkpoint as
the latest. `.keras` files are written to a temporary name and renamed.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from common.errors import UserError
from common.run import Run


class Checkpoints:
    """Models, optimizers (with their step counters) and the epoch, kept as the last `keep` checkpoints."""

    def __init__(self, run: Run, items: dict[str, Any], keep: int = 3, chief: bool = True) -> None:
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(epoch=self.epoch, **items)
        self.optimizers = [item for item in items.values() if isinstance(item, keras.optimizers.Optimizer)]
        # In a multi-worker run every worker takes part in saving; only the chief's copy is kept (the others' are
        # deleted when their process ends: tens of MB a run).
        folder = run.checkpoints if chief else Path(tempfile.mkdtemp(prefix="worker-ckpt-"))
        if not chief:
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        self.folder = folder
        set_aside_damaged_state(folder)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(folder), max_to_keep=keep)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore(self, log: Callable[[str], None] = print) -> int:
        """Loads the newest complete checkpoint and returns the number of finished epochs."""
        restore_newest(self.checkpoint, self.folder, log, optimizers=self.optimizers)
        return int(self.epoch.numpy())

    def save(self, epoch: int) -> str:
        self.epoch.assign(epoch)
        return self.manager.save(checkpoint_number=epoch)


def set_aside_damaged_state(folder: Path) -> None:
    """An unreadable `checkpoint` state file (empty, cut short) is renamed so TensorFlow can start afresh;
    the checkpoints themselves are found by their file names (see checkpoint_candidates)."""
    state = Path(folder) / "checkpoint"
    if not state.exists():
        return
    try:
        tf.train.get_checkpoint_state(str(folder))
    except (ValueError, tf.errors.OpError):
        state.replace(state.with_name("checkpoint.damaged"))


def checkpoint_candidates(folder: str | os.PathLike) -> list[str]:
    """Checkpoint prefixes in `folder`, newest first: the state file's list, else the ckpt-N.index files."""
    folder = Path(folder)
    numbered = {}
    for index in folder.glob("ckpt-*.index"):
        number = index.name[len("ckpt-"):-len(".index")]
        if number.isdigit():
            numbered[int(number)] = str(folder / f"ckpt-{number}")
    try:
        state = tf.train.get_checkpoint_state(str(folder))
    except (ValueError, tf.errors.OpError):
        state = None
    latest = state.model_checkpoint_path if state else None
    ordered = [numbered[n] for n in sorted(numbered, reverse=True)]
    if latest and os.path.basename(latest) in {os.path.basename(c) for c in ordered}:
        # a checkpoint newer than the named latest was cut short by a kill: start at the named one
        cut = [os.path.basename(c) for c in ordered].index(os.path.basename(latest))
        ordered = ordered[cut:]
    return ordered


def restore_newest(checkpoint: tf.train.Checkpoint, folder: str | os.PathLike, log: Callable[[str], None] = print,
                   partial: bool = False, optimizers: Sequence[keras.optimizers.Optimizer] = ()) -> str:
    """Restores the newest checkpoint in `folder` that reads; a damaged one is skipped with one line.

    A checkpoint that reads but does not fit the models is the user's flags, not damage: one sentence.
    `optimizers` keep the learning rates they were built with: a checkpoint also holds the rate it trained at,
    and `--resume RUN --lr X` means X from here on (as the run's config.json then says), not the old rate.
    """
    rates = [keep_learning_rate(optimizer) for optimizer in optimizers]
    candidates = checkpoint_candidates(folder)
    if not candidates:
        raise UserError(f"no checkpoint in {folder} to resume from")
    damaged = []
    for path in candidates:
        try:
            status = checkpoint.restore(path)
            status.expect_partial() if partial else status.assert_existing_objects_matched()
        except (AssertionError, ValueError) as error:
            if not _is_damage(error):
                raise UserError(f"checkpoint {path} does not fit these models (were the flags that shape the "
                                f"networks changed?): {str(error).splitlines()[0]}") from None
            damaged.append((path, error))
        except (IndexError, tf.errors.OpError) as error:
            if isinstance(error, (tf.errors.InvalidArgumentError, tf.errors.NotFoundError)) and _reads_whole(path):
                raise UserError(f"checkpoint {path} does not fit these models (were the flags that shape the "
                                f"networks changed?): {_op_reason(error)}") from None
            damaged.append((path, error))
        else:
            for set_rate in rates:
                set_rate()
            if damaged:
                names = ", ".join(os.path.basename(p) for p, _ in damaged)
                log(f"checkpoint {names} is damaged ({_reason(damaged[0][1])}); resumed from "
                    f"{os.path.basename(path)}, the newest complete one")
            return path
    raise UserError(f"no usable checkpoint in {folder}: " + "; ".join(
        f"{os.path.basename(p)} is damaged ({_reason(e)})" for p, e in damaged) + "; start a new run")


def keep_learning_rate(optimizer: keras.optimizers.Optimizer) -> Callable[[], None]:
    """Reads `optimizer`'s learning rate now; the returned function sets it back (after a restore)."""
    rate = float(np.asarray(optimizer.learning_rate))

    def set_back() -> None:
        optimizer.learning_rate = rate

    return set_back


def _is_damage(error: Exception) -> bool:
    text = str(error)
    return not ("incompatible" in text or "shape" in text or isinstance(error, AssertionError))


def _reads_whole(path: str) -> bool:
    """Whether every tensor of the checkpoint at `path` reads (each is checksummed): a restore that fails on such a
    file is a mismatch with the models, e.g. another --g-output typed at --resume, not damage."""
    try:
        reader = tf.train.load_checkpoint(path)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except (tf.errors.OpError, ValueError):
        return False
    return True


def _op_reason(error: Exception) -> str:
    """A restore op's message without TensorFlow's function-node prefix and op suffix."""
    text = str(getattr(error, "message", error)).splitlines()[0]
    return text.split("}} ")[-1].removesuffix(" [Op:RestoreV2]")


def _reason(error: Exception) -> str:
    return str(getattr(error, "message", error)).splitlines()[0][:120]


@contextlib.contextmanager
def explain_write_failure(run: Run, what: str, last_checkpoint: str | None) -> Iterator[None]:
    """Turns a failed write (disk full, quota, a vanished mount) into one sentence saying what was kept."""
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        reason = getattr(error, "strerror", None) or str(getattr(error, "message", error)).split(";")[-1].strip()
        raise UserError(f"could not save {what} in {run} ({reason}); the last complete checkpoint is kept "
                        f"({last_checkpoint or 'none yet'}): free some space, then continue with --resume "
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
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the saved model's .keras file")
    if not zipfile.is_zipfile(path):  # a .keras file is a zip archive; Keras would say "File not found"
        raise UserError(f"{path} is not a Keras model file (damaged, cut short or another format); "
                        f"{how_to_make}")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except (ValueError, OSError, TypeError, KeyError, zipfile.BadZipFile) as error:
        raise UserError(f"cannot load {path} as a Keras model ({str(error).splitlines()[0][:200]})") from None


def check_model_io(model: keras.Model, path: str | os.PathLike, what: str, inputs: int | None = None,
                   input_rank: int | None = None, output_rank: int | None = None) -> keras.Model:
    """Refuses a loaded model of the wrong kind (e.g. a discriminator given as --generator) in one sentence."""
    shapes = [tuple(t.shape) for t in model.inputs]
    out = tuple(model.outputs[0].shape)
    if ((inputs is not None and len(shapes) != inputs) or (input_rank is not None and len(shapes[0]) != input_rank)
            or (output_rank is not None and len(out) != output_rank)):
        raise UserError(f"{path} is not {what} (it maps {', '.join(map(str, shapes))} to {out})")
    return model
