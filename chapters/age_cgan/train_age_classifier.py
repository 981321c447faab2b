"""Trains the small age classifier that `--stage evaluate` uses to read the age class of generated
procedural faces, and saves it as chapters/age_cgan/weights/age_classifier.keras.

    python chapters/age_cgan/train_age_classifier.py --overwrite   (rewrites the shipped weights/age_classifier.keras)
    python chapters/age_cgan/train_age_classifier.py --out new.keras [--faces 16000] [--epochs 6]
    (an existing --out, or its .json report, is kept unless --overwrite)

Data: datasets/procedural_faces.make_dataset(faces, seed 777) (identities the GAN's default seeds never
draw), ages spread evenly over the six classes. Half of the faces are degraded the way a small GAN's
output is (downsampled to 16-40 px and back, plus pixel noise) so that blurry generated faces are read by
their age marks rather than rejected. Adam 2e-3 decayed to 0 on a cosine, batch 64, cross-entropy, 6 epochs;
the held-out accuracy (2,000 other faces, clean and degraded) is printed and stored beside the model in
age_classifier.json. Ages are whole years and the marks ramp across the bucket edges, so the classes of 29 and
30 differ by one year of ramp: the classifier needs many faces and epochs to read that finely.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent / "weights" / "age_classifier.keras"


def degrade(images: np.ndarray, seed: int) -> np.ndarray:
    """Blur half of the faces (down to 16-40 px and back up) and add noise to all of them."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    out = images.copy()
    for i in np.flatnonzero(rng.random(len(images)) < 0.5):
        side = int(rng.integers(16, 41))
        small = tf.image.resize(images[i:i + 1], (side, side), antialias=True)
        out[i] = tf.image.resize(small, images.shape[1:3]).numpy()[0]
    out += rng.normal(0, rng.uniform(0, 0.06, (len(images), 1, 1, 1)), images.shape).astype(np.float32)
    return np.clip(out, -1, 1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=16000, help="training faces")
    parser.add_argument("--epochs", type=int, default=6, help="passes over the training faces")
    parser.add_argument("--out", default=str(OUT), help="where to save the .keras model (its report: the same name "
                        ".json)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out and its report if they exist")
    args = parser.parse_args(argv)
    if args.faces < 64 or args.epochs < 1:
        parser.error(f"--faces must be at least one batch (64) and --epochs at least 1, got {args.faces} and "
                     f"{args.epochs}")
    out = Path(args.out)
    for path in (out, out.with_suffix(".json")):
        if path.is_dir() or (path.exists() and not args.overwrite):
            what = "is a folder" if path.is_dir() else "already exists; pass --overwrite to replace it"
            print(f"error: {path} {what}", file=sys.stderr)  # before minutes of training, not after
            raise SystemExit(2)

    import keras

    from chapters.age_cgan.models import build_age_classifier
    from common.checkpoints import save_model
    from datasets.procedural_faces import make_dataset

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # before minutes of training, not after
    keras.utils.set_random_seed(0)
    x, _, y = make_dataset(args.faces, 777)
    x = degrade(x, 1)
    xt, _, yt = make_dataset(2000, 778)
    model = build_age_classifier()
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=args.epochs * -(-args.faces // 64))
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=2, shuffle=True)
    clean = float(model.evaluate(xt, yt, verbose=0)[1])
    degraded = float(model.evaluate(degrade(xt, 2), yt, verbose=0)[1])
    predictions = np.argmax(model.predict(xt, verbose=0), -1)
    per_class = [float(np.mean(predictions[yt == k] == k)) for k in range(6)]
    bare = build_age_classifier()  # saved without the optimizer's state: a third of the size
    bare.set_weights(model.get_weights())
    out = save_model(bare, out)
    report = {"train_faces": args.faces, "train_seed": 777, "epochs": args.epochs, "learning_rate": "2e-3 cosine",
              "test_faces": 2000,
              "test_seed": 778, "test_accuracy_clean": clean, "test_accuracy_degraded": degraded,
              "test_accuracy_per_class_clean": per_class, "params": model.count_params()}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}; held-out accuracy {clean:.3f} (clean), {degraded:.3f} (degraded); per class "
          + ", ".join(f"{a:.2f}" for a in per_class))


if __name__ == "__main__":
    main()
