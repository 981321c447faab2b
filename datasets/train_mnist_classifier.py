"""Train the project's small MNIST CNN used for FID/KID/IS and class-coverage read-outs.

Run: python -m datasets.train_mnist_classifier --overwrite   (rewrites datasets/mnist_classifier.keras)
     python -m datasets.train_mnist_classifier --out new.keras  (an existing --out is kept unless --overwrite)

Data: the embedded digits datasets/mnist_8k.npz; the last 1,000 digits (HELDOUT) are never trained on,
so the accuracy printed at the end (and checked by tests/test_metrics.py) is an honest held-out number.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "mnist_8k.npz"
MODEL = HERE / "mnist_classifier.keras"
HELDOUT = 1000  # the last 1,000 digits of mnist_8k.npz form the fixed held-out split


def mnist_split(path: Path = DATA) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_heldout, y_heldout); images float32 in [-1, 1], shape (N, 28, 28, 1)."""
    with np.load(path, allow_pickle=False) as d:
        x = d["x"].astype(np.float32)[..., None] / 127.5 - 1.0
        y = d["y"].astype(np.int64)
    return x[:-HELDOUT], y[:-HELDOUT], x[-HELDOUT:], y[-HELDOUT:]


def build_classifier():
    """Small CNN, (28, 28, 1) in [-1, 1] -> 10 softmax; layer "features" is the 128-d embedding."""
    import keras
    from keras import layers

    def conv(x, filters):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    inputs = keras.Input((28, 28, 1), name="image")
    x = inputs
    for filters in (32, 64, 64):  # 28 -> 14 -> 7 -> 3; one conv per scale keeps CPU training short
        x = layers.MaxPooling2D()(conv(x, filters))
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu", name="features")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mnist_classifier")


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(prog="python -m datasets.train_mnist_classifier", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling and augmentation "
                                                             "(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=MODEL, help="where to save the classifier, a .keras file "
                                                                 "(default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it already exists")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.out.suffix != ".keras":
        parser.error(f"--out must be a .keras file, got {args.out}")
    if args.out.is_dir() or (args.out.exists() and not args.overwrite):
        what = "is a folder" if args.out.is_dir() else "already exists; pass --overwrite to replace it"
        print(f"error: {args.out} {what}", file=sys.stderr)  # before minutes of training, not after
        raise SystemExit(2)

    import keras
    import tensorflow as tf
    from keras import layers

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    x_train, y_train, x_test, y_test = mnist_split()

    # Background is -1 in [-1, 1], so shifted/rotated-in pixels must be -1 too.
    augment = keras.Sequential(
        [
            layers.RandomRotation(0.03, fill_mode="constant", fill_value=-1.0, seed=args.seed),
            layers.RandomTranslation(0.1, 0.1, fill_mode="constant", fill_value=-1.0, seed=args.seed + 1),
            layers.RandomZoom(0.1, fill_mode="constant", fill_value=-1.0, seed=args.seed + 2),
        ],
        name="augment",
    )
    classifier = build_classifier()
    trainer = keras.Sequential([keras.Input((28, 28, 1)), augment, classifier])
    batch = 128
    steps = args.epochs * int(np.ceil(len(x_train) / batch))
    trainer.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    trainer.fit(x_train, y_train, batch_size=batch, epochs=args.epochs, shuffle=True, verbose=2)
    seconds = time.perf_counter() - start

    probs = classifier.predict(x_test, batch_size=500, verbose=0)
    accuracy = float(np.mean(probs.argmax(1) == y_test))
    # Only the classifier is saved: no augmentation layers and no optimizer state in the file.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    classifier.save(args.out)
    size_kb = args.out.stat().st_size / 1024
    print(f"held-out accuracy {accuracy:.4f} on the last {HELDOUT} digits; "
          f"training {seconds:.0f} s; saved {args.out} ({size_kb:.0f} KiB)")
    return accuracy


if __name__ == "__main__":
    main()
