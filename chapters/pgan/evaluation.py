"""PGAN's stages after training: explore (latent walk, interpolations) and evaluate (FID/KID)."""
from __future__ import annotations

import time

from chapters.pgan.training import TrainingData
from common import latent


def explore(run, args, parser) -> None:
    """The latent walk between two seeds (GIF + strip) and common.latent's interpolations, arithmetic, sweeps."""
    from common.checkpoints import load_model

    generator = load_model(run.model_path("generator"), f"train first: {parser.prog} --run-dir {run}")
    seeds = list(args.walk_seeds or (args.seed, args.seed + 1))
    latent.latent_walk_gif(generator, run.root / "explore" / f"walk_{seeds[0]}_{seeds[1]}.gif", seeds,
                           steps=args.walk_steps, method=args.walk_method, min_side=128)
    latent.explore_stage(run, generator, latent.Exploration.from_args(args))


def evaluate(run, args, parser) -> dict:
    """FID/KID of --eval-samples generated images against as many real ones, at the generator's resolution."""
    import json

    import numpy as np

    from common.checkpoints import load_model
    from common.evaluate import write_scores
    from common.metrics import generated_metrics

    generator = load_model(run.model_path("generator"), f"train first: {parser.prog} --run-dir {run}")
    res = int(generator.outputs[0].shape[1])
    extractor = pick_extractor(args)
    data = TrainingData.from_args(args)
    real = data.sample(res, args.eval_samples, args.seed)
    started = time.time()
    z = np.random.default_rng(args.seed + 1).standard_normal((len(real), generator.inputs[0].shape[-1]))
    fakes = np.clip(generator.predict(z.astype(np.float32), batch_size=64, verbose=0), -1.0, 1.0)
    real_features = extractor.features(real)
    fake_features, probabilities = extractor.outputs(fakes)
    scores = generated_metrics(real_features, fake_features, probabilities, extractor.name,
                               kid_subsets=50, kid_subset_size=min(1000, len(real)))
    phases = run.root / "phases.json"
    images = int(json.loads(phases.read_text()).get("total_images", 0)) if phases.exists() else 0
    write_scores(run, scores, images, f"{res}x{res}, {len(real)} samples, {extractor.name} features", started,
                 {"resolution": res, "samples": len(real), "extractor": extractor.name,
                  "data": args.data or "procedural faces"})
    return scores


def pick_extractor(args):
    from common.metrics import choose_extractor, faces_extractor

    return choose_extractor(args.extractor, args.inception_weights, faces_extractor)
