"""The mode-coverage benchmark: its score must be able to fail, and its training path must run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench import modes
from common.errors import UserError
from conftest import run_main


def _on_modes(dataset: str, which: list[int], std: float, count: int = modes.NUM_SAMPLES) -> np.ndarray:
    rng = np.random.default_rng(0)
    means = modes.centres(dataset)[which]
    return means[rng.integers(len(means), size=count)] + std * rng.standard_normal((count, 2))


def test_the_mixtures_are_the_standard_ones():
    ring, grid = modes.centres("ring"), modes.centres("grid")
    assert ring.shape == (8, 2) and grid.shape == (25, 2)
    np.testing.assert_allclose(np.linalg.norm(ring, axis=1), 2.0, atol=1e-6)
    assert sorted(set(grid[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    real = modes.sample_real("grid", modes.GRID_STD, 50_000, seed=1)
    nearest = np.linalg.norm(real[:, None] - grid[None], axis=-1).argmin(1)
    assert np.std(real - grid[nearest]) == pytest.approx(modes.GRID_STD, rel=0.05)


def test_real_samples_score_all_modes_and_nearly_all_high_quality():
    for dataset, std in (("ring", modes.RING_STD), ("grid", modes.GRID_STD)):
        means = modes.centres(dataset)
        score = modes.mode_metrics(modes.sample_real(dataset, std, modes.NUM_SAMPLES, seed=2), means, std)
        assert score["modes"] == len(means)
        assert score["hq"] > 0.97  # a 2-D Gaussian puts 98.9% of its mass within 3 std
        assert score["reverse_kl"] < 0.02


def test_a_collapsed_generator_is_caught():
    score = modes.mode_metrics(_on_modes("ring", [0, 3, 5], modes.RING_STD), modes.centres("ring"), modes.RING_STD)
    assert score["modes"] == 3
    assert score["hq"] > 0.97  # sharp samples: only coverage shows the collapse
    assert score["reverse_kl"] == pytest.approx(math.log(8 / 3), abs=0.02)
    assert [c > 0 for c in score["counts"]] == [i in (0, 3, 5) for i in range(8)]


def test_blurry_or_far_samples_are_not_high_quality():
    means = modes.centres("ring")
    far = np.random.default_rng(0).uniform(5, 9, size=(2500, 2))
    score = modes.mode_metrics(far, means, modes.RING_STD)
    assert score == {"modes": 0, "hq": 0.0, "reverse_kl": pytest.approx(math.log(8)), "counts": [0] * 8}
    blurry = modes.mode_metrics(_on_modes("ring", list(range(8)), 0.3), means, modes.RING_STD)
    assert blurry["hq"] < 0.1  # right places, ten times too spread out
    nan = modes.mode_metrics(np.full((100, 2), np.nan), means, modes.RING_STD)
    assert nan["modes"] == 0 and nan["hq"] == 0.0


def test_a_mode_needs_twenty_samples():
    samples = _on_modes("grid", list(range(24)), modes.GRID_STD)
    samples[:19] = modes.centres("grid")[24]  # 19 of 2,500 on the last mode: not captured
    assert modes.mode_metrics(samples, modes.centres("grid"), modes.GRID_STD)["modes"] == 24
    samples[:20] = modes.centres("grid")[24]
    assert modes.mode_metrics(samples, modes.centres("grid"), modes.GRID_STD)["modes"] == 25


def test_configurations_are_checked_before_training():
    assert modes.resolve_configs(["gan", "mine=--loss hinge --pack 2"]) == {"gan": "", "mine": "--loss hinge --pack 2"}
    with pytest.raises(UserError, match="unknown configuration"):
        modes.resolve_configs(["gann"])
    with pytest.raises(UserError, match="divisible"):
        modes.parse_options("--pack 3", batch_size=16)
    with pytest.raises(UserError, match="bad configuration flags"):
        modes.parse_options("--loss nope", batch_size=16)


def test_a_tiny_benchmark_runs_and_writes_its_results(tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = ["--configs", "gan", "pack2", "feature-matching", "--datasets", "ring", "--steps", "6",
            "--seeds", "1", "--batch-size", "16", "--hidden", "8", "--depth", "1",
            "--out", out, "--plots-dir", tmp_path / "plots"]
    assert run_main(modes.main, argv) == 0
    table = capsys.readouterr().out
    assert "ring modes /8" in table and "pack2" in table and "feature-matching" in table
    results = json.loads(out.read_text())
    for name in ("gan", "pack2", "feature-matching"):
        ring = results["results"][name]["datasets"]["ring"]
        assert 0 <= ring["modes"] <= 8 and 0.0 <= ring["hq"] <= 1.0
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000
    assert results["training"]["steps"] == 6


def test_training_is_reproducible_and_moves_the_generator():
    import keras

    options = modes.parse_options("--loss wgan-gp --minibatch-discrimination 4", batch_size=16)
    kwargs = dict(steps=5, batch_size=16, seed=3, hidden=8, depth=1, xla=False)
    first = modes.generate(modes.train("grid", modes.GRID_STD, options, **kwargs), 2, 3, "grid", count=64)
    again = modes.generate(modes.train("grid", modes.GRID_STD, options, **kwargs), 2, 3, "grid", count=64)
    np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-6)
    keras.utils.set_random_seed(3)  # the same initial weights, untrained
    untrained = modes.build_generator(2, 8, 1)(
        np.random.default_rng(3 + 10_000).standard_normal((64, 2)).astype("float32"))
    assert not np.allclose(first, np.asarray(untrained) * modes.data_scale("grid"), atol=1e-3)


def test_bad_flags_exit_2_without_a_traceback(capsys):
    assert run_main(modes.main, ["--configs", "nope"]) == 2
    assert "unknown configuration" in capsys.readouterr().err
