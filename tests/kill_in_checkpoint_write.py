"""Runs the vanilla GAN but dies (SIGKILL) in the middle of writing its second checkpoint.

Half-written files are left at the checkpoint's final names, the worst case for a reader: the test checks
that resuming ignores them and continues from the first checkpoint.
"""
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402

_write = tf.train.Checkpoint._write
_calls = []


def _dying_write(self, file_prefix, options=None):
    _calls.append(file_prefix)
    if len(_calls) == 2:
        for suffix in (".index", ".data-00000-of-00001"):
            Path(file_prefix + suffix).write_bytes(b"\0" * 64)
        os.kill(os.getpid(), signal.SIGKILL)
    return _write(self, file_prefix, options=options)


tf.train.Checkpoint._write = _dying_write

from chapters.vanilla_gan.main import main  # noqa: E402
from common.cli import run_main  # noqa: E402

run_main(main)
