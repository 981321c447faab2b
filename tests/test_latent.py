"""common/latent.py: the latent math numerically, and the refusal of conditional generators."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from common import latent
from common.errors import UserError


def _pair(dim=100):
    return latent.latent_for_seed(1, dim), latent.latent_for_seed(2, dim)


def test_seeds_name_reproducible_standard_normal_latents():
    a = latent.latent_for_seed(7, 100)
    np.testing.assert_array_equal(a, np.random.default_rng(7).standard_normal(100).astype(np.float32))
    assert a.dtype == np.float32 and not np.array_equal(a, latent.latent_for_seed(8, 100))
    assert latent.latents_for_seeds([7, 8], 100).shape == (2, 100)


@pytest.mark.parametrize("between", [latent.lerp, latent.slerp])
def test_interpolation_hits_both_endpoints(between):
    a, b = _pair()
    path = between(a, b, [0.0, 1.0])
    np.testing.assert_allclose(path[0], a, atol=1e-5)
    np.testing.assert_allclose(path[1], b, atol=1e-5)


def test_lerp_midpoint_is_the_mean():
    a, b = _pair()
    np.testing.assert_allclose(latent.lerp(a, b, 0.5)[0], (a + b) / 2, atol=1e-6)


def test_slerp_keeps_the_norm_where_lerp_shrinks_it():
    a, b = _pair(512)
    b = b / np.linalg.norm(b) * np.linalg.norm(a)  # equal norms: slerp stays on the sphere
    t = np.linspace(0, 1, 11)
    np.testing.assert_allclose(np.linalg.norm(latent.slerp(a, b, t), axis=1), np.linalg.norm(a), rtol=1e-5)
    # two nearly orthogonal Gaussian vectors: the straight line's middle is ~1/sqrt(2) as long
    assert np.linalg.norm(latent.lerp(a, b, 0.5)) < 0.8 * np.linalg.norm(a)


def test_slerp_moves_at_constant_angular_speed_on_the_great_circle():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    points = latent.slerp(a, b, [0.0, 1 / 3, 2 / 3, 1.0])
    angles = np.degrees(np.arctan2(points[:, 1], points[:, 0]))
    np.testing.assert_allclose(angles, [0, 30, 60, 90], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), [1, 4 / 3, 5 / 3, 2], rtol=1e-5)  # norm: linear
    assert np.allclose(points[:, 2], 0)


def test_slerp_of_parallel_vectors_falls_back_to_lerp():
    a = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(latent.slerp(a, 2 * a, [0.5]), latent.lerp(a, 2 * a, [0.5]), rtol=1e-6)


def test_interpolate_through_three_latents_has_no_repeated_points():
    z = latent.latents_for_seeds([0, 1, 2], 16)
    path = latent.interpolate(z, 5, "spherical")
    assert path.shape == (2 * 4 + 1, 16)
    np.testing.assert_allclose(path[[0, 4, 8]], z, atol=1e-5)
    loop = latent.interpolate(z, 5, "linear", closed=True)
    assert loop.shape == (3 * 4, 16)
    np.testing.assert_allclose(loop[0], z[0])
    with pytest.raises(UserError, match="at least two latents"):
        latent.interpolate(z[:1], 5)
    with pytest.raises(UserError, match="method"):
        latent.interpolate(z, 5, "cubic")


def test_arithmetic_gives_sum_absolute_difference_and_product():
    a, b = np.array([1.0, -2.0, 3.0]), np.array([0.5, 4.0, -1.0])
    out = latent.arithmetic(a, b)
    assert list(out) == ["A+B", "|A-B|", "A*B"]
    np.testing.assert_allclose(out["A+B"], [1.5, 2.0, 2.0])
    np.testing.assert_allclose(out["|A-B|"], [0.5, 6.0, 4.0])
    np.testing.assert_allclose(out["A*B"], [0.5, -8.0, -3.0])
    with pytest.raises(UserError, match="one shape"):
        latent.arithmetic(a, b[:2])


def test_sweep_changes_only_the_chosen_dimension():
    base = latent.latents_for_seeds([3, 4], 10)
    values = np.linspace(-3, 3, 7)
    grid = latent.sweep(base, 6, values)
    assert grid.shape == (2, 7, 10)
    np.testing.assert_allclose(grid[:, :, 6], np.tile(values, (2, 1)), rtol=1e-6)
    keep = [d for d in range(10) if d != 6]
    np.testing.assert_array_equal(grid[:, :, keep], np.repeat(base[:, None, keep], 7, axis=1))
    with pytest.raises(UserError, match="dimension 10 does not exist"):
        latent.sweep(base, 10, values)


def _explore_args(**overrides) -> "latent.Exploration":
    parser = argparse.ArgumentParser()
    latent.add_flags(parser)
    args = parser.parse_args([])
    args.seed = 0
    for key, value in overrides.items():
        setattr(args, key, value)
    return latent.Exploration.from_args(args)


def test_explore_refuses_a_conditional_generator(tmp_path):
    import keras

    from common.run import Run

    z, label = keras.Input((8,), name="z"), keras.Input((3,), name="label")
    image = keras.layers.Reshape((2, 2, 3))(keras.layers.Dense(12)(keras.layers.Concatenate()([z, label])))
    conditional = keras.Model([z, label], image, name="conditional_generator")
    with pytest.raises(UserError, match="unconditional generator with one latent input.*takes 2 inputs"):
        latent.explore_stage(Run(tmp_path), conditional, _explore_args())
    with pytest.raises(UserError, match="takes 2 inputs"):
        latent.latent_walk_gif(conditional, tmp_path / "walk.gif", [0, 1])


def test_explore_and_walk_write_grids_gif_and_seeds(tmp_path, capsys):
    import json

    import keras
    from PIL import Image

    from common.run import Run

    z = keras.Input((6,), name="z")
    image = keras.layers.Reshape((4, 4, 3))(keras.layers.Dense(48, activation="tanh")(z))
    generator = keras.Model(z, image, name="generator")
    run = Run(tmp_path)
    written = latent.explore_stage(run, generator, _explore_args(sweep_dims=[0, 5], sweep_steps=3, sweep_rows=2,
                                                                 interpolate_steps=4))
    names = sorted(p.name for p in (tmp_path / "explore").glob("*.png"))
    assert names == ["arithmetic.png", "interpolation_linear.png", "interpolation_spherical.png",
                     "sweep_dim000.png", "sweep_dim005.png"]
    strip = np.asarray(Image.open(tmp_path / "explore" / "interpolation_spherical.png"))
    assert strip.shape == (4 + 4, 7 * 6 + 2, 3)  # one row of 3 seeds x 3 steps + 1 images, 2-pixel gaps
    assert np.asarray(Image.open(tmp_path / "explore" / "arithmetic.png")).shape == (3 * 6 + 2, 5 * 6 + 2, 3)
    record = json.loads((tmp_path / "explore" / "seeds.json").read_text())
    assert record["interpolation"]["seeds"] == [0, 1, 2] and record["arithmetic"]["pairs"][0] == [10, 11]
    assert len(written["sweep"]) == 2 and list((tmp_path / "logs" / "train").glob("events.out.tfevents.*"))
    assert "interpolation seeds 0 1 2" in capsys.readouterr().out

    gif, png = latent.latent_walk_gif(generator, tmp_path / "walk.gif", [0, 1, 2], steps=5, min_side=16)
    with Image.open(gif) as animation:
        assert animation.n_frames == 3 * 4 and animation.size == (16, 16)
    assert png.exists()
