"""Fetches the full MNIST training set (Keras' mnist.npz, 60,000 digits) for the vanilla GAN chapter.

    python datasets/fetch_mnist.py [OUT]            # default: datasets/mnist.npz
    python chapters/vanilla_gan/main.py --data datasets/mnist.npz

The file is downloaded to OUT.part and renamed to OUT only once its SHA-256 matches. A verified copy already at
OUT is kept; any other file there is left alone unless --overwrite is given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.download import download, main_guard  # noqa: E402

URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python datasets/fetch_mnist.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).resolve().parent / "mnist.npz",
                        metavar="OUT", help="file to write (an existing folder: OUT/mnist.npz; "
                                            "default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a file already at OUT whose SHA-256 is not the expected one")
    args = parser.parse_args(argv)
    out = args.out / "mnist.npz" if args.out.is_dir() else args.out
    download(URL, out, SHA256, overwrite=args.overwrite)
    print(f"done: train with  python chapters/vanilla_gan/main.py --data {out}")


if __name__ == "__main__":
    main_guard(main)
