"""Fetches the full MNIST training set (Keras' mnist.npz, 60,000 digits) for the vanilla GAN chapter.

    python datasets/fetch_mnist.py [OUT]            # default: datasets/mnist.npz
    python chapters/vanilla_gan/main.py --data datasets/mnist.npz
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.download import download, main_guard  # noqa: E402

URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "mnist.npz"
    download(URL, out, SHA256)
    print(f"done: train with  python chapters/vanilla_gan/main.py --data {out}")


if __name__ == "__main__":
    main_guard(main)
