"""Scoring an unconditional generator against real data: `--stage evaluate` and `--eval-every N`."""
from __future__ import annotations

import json
import time
from typing import Callable

import keras
import numpy as np

from common.metrics import FeatureExtractor, classifier_readout, generated_metrics
from common.run import Run
from common.tensorboard import TensorBoardWriter


class GeneratorScore:
    """FID/KID/IS and a classifier read-out of N samples, with the real features computed once."""

    def __init__(self, real_images: np.ndarray, extractor: FeatureExtractor, num_samples: int = 2000,
                 seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(real_images), size=min(num_samples, len(real_images)), replace=False)
        self.extractor, self.num_samples, self.seed = extractor, len(chosen), seed
        self.real_features = extractor.features(real_images[np.sort(chosen)])

    def __call__(self, generator: keras.Model) -> dict[str, float]:
        latent_dim = generator.inputs[0].shape[-1]
        z = np.random.default_rng(self.seed + 1).standard_normal((self.num_samples, latent_dim)).astype(np.float32)
        fakes = generator.predict(z, batch_size=256, verbose=0)
        fake_features, probabilities = self.extractor.outputs(fakes)
        subset = min(1000, self.num_samples)
        scores = generated_metrics(self.real_features, fake_features, probabilities, self.extractor.name,
                                   kid_subsets=50, kid_subset_size=subset)
        name = self.extractor.name
        readout = classifier_readout(probabilities)
        scores.update({f"{k}_{name}": float(v) for k, v in readout.items() if k != "num_classes"})
        return scores


def evaluate_stage(run: Run, generator: keras.Model, score: GeneratorScore, log: Callable[[str], None] = print
                   ) -> dict[str, float]:
    """Scores the saved generator, writes metrics.json and TensorBoard scalars (eval/...), prints a table."""
    started = time.time()
    scores = score(generator)
    epoch = run.epochs_trained()
    write_scores(run, scores, epoch, f"epoch {epoch}, {score.num_samples} samples, {score.extractor.name} features",
                 started, {"epoch": epoch, "samples": score.num_samples, "extractor": score.extractor.name}, log)
    return scores


def write_scores(run: Run, scores: dict[str, float], step: int, what: str, started: float, details: dict,
                 log: Callable[[str], None] = print) -> None:
    """How every --stage evaluate reports: <run>/metrics.json ({**details, "metrics": scores}), TensorBoard
    scalars eval/<score> at `step`, and a table on stdout headed "evaluated <run> (<what>, <seconds> s):"."""
    run.write_json(run.metrics_file, {**details, "metrics": scores})
    TensorBoardWriter(run).scalars(scores, step=step, prefix="eval/")
    log(f"evaluated {run} ({what}, {time.time() - started:.1f} s):")
    width = max((len(key) for key in scores), default=0)
    for key, value in scores.items():
        log(f"  {key:{width}s}  {value:.4f}")
    log(f"written to {run.metrics_file}")


class EvaluateEvery(keras.callbacks.Callback):
    """Adds the scores to the epoch's logs every N epochs (so they reach TensorBoard and history.csv)."""

    def __init__(self, score: GeneratorScore, every: int, gan) -> None:
        super().__init__()
        self.score, self.every, self.gan = score, every, gan

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None and (epoch + 1) % self.every == 0:  # the generator a user samples from
            logs.update({f"eval/{k}": v for k, v in self.score(self.gan.sampling_generator()).items()})


def load_metrics(run: Run) -> dict:
    return json.loads(run.metrics_file.read_text())
