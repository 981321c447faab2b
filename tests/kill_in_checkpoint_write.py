"""Runs a chapter's main.py but dies (SIGKILL) in the middle of writing its Nth checkpoint.

    python tests/kill_in_checkpoint_write.py CHAPTER N [chapter flags...]

Half-written files are left at the checkpoint's final names, the worst case for a reader: the tests check
that resuming ignores them and continues from the checkpoint before.
"""
import importlib
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402

chapter, dying_write = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
_write = tf.train.Checkpoint._write
_calls = []


def _dying_write(self, file_prefix, options=None):
    _calls.append(file_prefix)
    if len(_calls) == dying_write:
        for suffix in (".index", ".data-00000-of-00001"):
            Path(file_prefix + suffix).write_bytes(b"\0" * 64)
        os.kill(os.getpid(), signal.SIGKILL)
    return _write(self, file_prefix, options=options)


tf.train.Checkpoint._write = _dying_write

from common.cli import run_main  # noqa: E402

run_main(importlib.import_module(f"chapters.{chapter}.main").main)
