"""The figures `--stage evaluate` writes to metrics.json, as functions of plain callables so that tests can
score a generator built for the purpose (one that ignores the age, one that draws the data itself).

- `age_accuracy_real`: the age classifier's accuracy on held-out real faces (its ceiling), per class.
- `age_accuracy_generated`: its accuracy on G(z, y) for every class y; also the mean class it reads per y,
  which must rise with y.
- `identity_ratio`: for faces laid out as (person, age): mean face-recognition distance between two ages of
  one person / mean distance between two people at one age. Generated: person = z; real: an identity of the
  procedural faces drawn at six ages.
- `refine_gain`: FR distance of reconstructions after the per-image z refinement / before it (main.py).
- `fid_faces_cnn`: FID with the faces CNN of the anime and PGAN chapters (common.metrics.faces_extractor).

`targets(metrics)` gives the issue's targets for a run and whether each is met.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Classify = Callable[[np.ndarray], np.ndarray]          # images -> class indices
Generate = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (z, one-hot age) -> images
Embed = Callable[[np.ndarray], np.ndarray]             # images -> FR embeddings

AGE_TARGET = 0.8        # age_accuracy_generated >= 0.8 x age_accuracy_real
IDENTITY_TARGET = 1.15  # identity_ratio <= 1.15 x identity_ratio_real
REFINE_TARGET = 0.75    # refine_gain <= 0.75
FID_TARGET = 20.0       # fid_faces_cnn <= 20


def per_class_accuracy(predicted: np.ndarray, classes: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    return {name: float(np.mean(predicted[classes == k] == k)) if np.any(classes == k) else None
            for k, name in enumerate(names)}


def age_accuracy_real(classify: Classify, images: np.ndarray, classes: np.ndarray, names: Sequence[str]) -> dict:
    predicted = np.asarray(classify(images))
    return {"age_accuracy_real": float(np.mean(predicted == classes)),
            "age_accuracy_real_per_class": per_class_accuracy(predicted, classes, names)}


def generated_by_age(generate: Generate, per_class: int, latent_dim: int, num_classes: int, seed: int,
                     batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """G(z, y) for `per_class` random z at every class y (the same z for every y): (images, classes)."""
    z = np.random.default_rng(seed).standard_normal((per_class, latent_dim)).astype("float32")
    images, classes = [], []
    for k in range(num_classes):
        y = np.zeros((per_class, num_classes), "float32")
        y[:, k] = 1
        images.append(np.concatenate([generate(z[i:i + batch], y[i:i + batch]) for i in range(0, per_class, batch)]))
        classes.append(np.full(per_class, k))
    return np.concatenate(images), np.concatenate(classes)


def age_accuracy_generated(classify: Classify, images: np.ndarray, classes: np.ndarray,
                           names: Sequence[str]) -> dict:
    """Accuracy per target class and its mean; the mean class read per target; whether it rises with y."""
    predicted = np.asarray(classify(images))
    per = per_class_accuracy(predicted, classes, names)
    read = [float(np.mean(predicted[classes == k])) for k in range(len(names))]
    return {"age_accuracy_generated": float(np.mean([v for v in per.values() if v is not None])),
            "age_accuracy_generated_per_class": per,
            "age_class_read_generated": dict(zip(names, read)),
            "age_class_read_rises": bool(np.all(np.diff(read) > 0))}


def identity_ratio(embed: Embed, faces: np.ndarray) -> dict:
    """faces: (people, ages, H, W, 3). Same person, two ages vs two people, same age (mean FR distances)."""
    people, ages = faces.shape[:2]
    e = np.asarray(embed(faces.reshape(-1, *faces.shape[2:])), np.float64).reshape(people, ages, -1)
    same = [np.linalg.norm(e[:, i] - e[:, j], axis=-1) for i in range(ages) for j in range(i + 1, ages)]
    diff = []
    for k in range(ages):
        d = np.linalg.norm(e[:, None, k] - e[None, :, k], axis=-1)
        diff.append(d[np.triu_indices(people, 1)])
    same_mean, diff_mean = float(np.mean(same)), float(np.mean(np.concatenate(diff)))
    return {"ratio": same_mean / diff_mean, "same_person": same_mean, "different_people": diff_mean}


def targets(metrics: dict) -> dict:
    """The targets of the default run, from the measured ceilings, and whether each is met."""
    out = {}
    if "age_accuracy_generated" in metrics and "age_accuracy_real" in metrics:
        goal = AGE_TARGET * metrics["age_accuracy_real"]
        out["age_accuracy_generated"] = {"target": f">= {goal:.3f} (0.8 x age_accuracy_real) and rising with y",
                                         "met": bool(metrics["age_accuracy_generated"] >= goal
                                                     and metrics.get("age_class_read_rises", False))}
    if "identity_ratio" in metrics and "identity_ratio_real" in metrics:
        goal = IDENTITY_TARGET * metrics["identity_ratio_real"]
        out["identity_ratio"] = {"target": f"<= {goal:.3f} (1.15 x identity_ratio_real)",
                                 "met": bool(metrics["identity_ratio"] <= goal)}
    if "refine_gain" in metrics:
        out["refine_gain"] = {"target": f"<= {REFINE_TARGET}", "met": bool(metrics["refine_gain"] <= REFINE_TARGET)}
    if "fid_faces_cnn" in metrics:
        out["fid_faces_cnn"] = {"target": f"<= {FID_TARGET:g}", "met": bool(metrics["fid_faces_cnn"] <= FID_TARGET)}
    return out
