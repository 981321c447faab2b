"""common/voxels.py and the procedural shapes: .obj export, IoU, renders, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from common.voxels import (exposed_faces, interpolate_latents, iou_matrix, mean_pairwise_iou, nearest_iou,
                           render_grid, shape_metrics, voxel_mesh, write_obj)
from common.voxels import debris_fractions, height_scores, occupancy_by_height, one_piece_fractions
from datasets.procedural_voxels import CATEGORIES, make_shapes


def _read_obj(path):
    vertices, faces = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            vertices.append([float(x) for x in line.split()[1:]])
        elif line.startswith("f "):
            faces.append([int(x) for x in line.split()[1:]])
    return np.array(vertices), np.array(faces)


def test_one_voxel_is_a_cube_of_8_vertices_and_6_outward_faces(tmp_path):
    volume = np.zeros((3, 3, 3), np.float32)
    volume[1, 1, 1] = 0.9
    assert write_obj(tmp_path / "one.obj", volume) == (8, 6)
    vertices, faces = _read_obj(tmp_path / "one.obj")
    assert vertices.shape == (8, 3) and faces.shape == (6, 4)
    assert faces.min() == 1 and faces.max() == 8  # 1-based, every vertex used
    centre = vertices.mean(axis=0)
    for face in faces - 1:
        a, b, c = vertices[face[:3]]
        normal = np.cross(b - a, c - b)
        assert np.dot(normal, vertices[face].mean(axis=0) - centre) > 0  # counter-clockwise from outside


def test_two_adjacent_voxels_share_their_inner_face_and_its_corners(tmp_path):
    volume = np.zeros((4, 4, 4, 1), np.float32)  # a trailing channel axis, as the generator outputs
    volume[1, 1, 1] = volume[2, 1, 1] = 1.0
    assert write_obj(tmp_path / "two.obj", volume) == (12, 10)
    diagonal = np.zeros((4, 4, 4))
    diagonal[1, 1, 1] = diagonal[2, 2, 2] = 1.0  # touching only at a corner: one vertex shared
    vertices, quads = voxel_mesh(diagonal)
    assert (len(vertices), len(quads)) == (15, 12)


def test_threshold_and_empty_volume():
    volume = np.full((2, 2, 2), 0.4)
    assert voxel_mesh(volume)[1].shape == (0, 4)
    assert len(exposed_faces(volume, threshold=0.3)[0]) == 24  # a 2x2x2 block: 4 faces per side


def test_iou_helpers():
    a = np.zeros((2, 4, 4, 4))
    a[0, :2] = 1  # half the cube
    a[1, 2:] = 1  # the other half
    b = np.zeros((1, 4, 4, 4))
    b[0, :1] = 1  # a quarter, inside a[0]
    matrix = iou_matrix(a, np.concatenate([a, b]))
    np.testing.assert_allclose(matrix, [[1, 0, 0.5], [0, 1, 0]], atol=1e-6)
    np.testing.assert_allclose(nearest_iou(b, a), [0.5])
    assert mean_pairwise_iou(a) == 0.0
    assert mean_pairwise_iou(np.stack([a[0]] * 3)) == 1.0
    scores = shape_metrics(a, np.concatenate([a[:1], b]))
    assert scores["nearest_train_iou_mean"] == pytest.approx(0.5)  # a[0] found (1.0), a[1] has none (0.0)
    assert scores["novel_fraction"] == 0.5 and scores["pairwise_iou_mean"] == 0.0


def test_render_grid_is_a_picture_of_the_shapes():
    shapes = make_shapes("chair", 2, 32)
    picture = render_grid(np.concatenate([shapes, np.zeros_like(shapes[:1])]), columns=3)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    third = picture.shape[1] // 3
    drawn = (picture < 200).any(axis=2)
    assert drawn[:, :third].mean() > 0.02  # a chair drawn in the first cell
    assert drawn[:, 2 * third:].mean() < 0.001  # the empty volume draws nothing


@pytest.mark.parametrize("category", CATEGORIES)
def test_procedural_shapes_are_deterministic_and_varied(category):
    shapes = make_shapes(category, 6, 32)
    np.testing.assert_array_equal(shapes, make_shapes(category, 6, 32))
    assert shapes.dtype == np.uint8 and set(np.unique(shapes)) == {0, 1}
    assert (shapes.reshape(6, -1).mean(axis=1) > 0.005).all()
    assert mean_pairwise_iou(shapes) < 0.9  # not all the same shape
    big = make_shapes(category, 6, 64)
    assert big.shape == (6, 64, 64, 64)
    pooled = big.reshape(6, 32, 2, 32, 2, 32, 2).max(axis=(2, 4, 6))
    matches = iou_matrix(pooled, shapes).argmax(axis=1)
    np.testing.assert_array_equal(matches, np.arange(6))  # shape i is the same object at both sizes


def test_interpolation_ends_at_both_latents():
    start, end = np.zeros((1, 1, 1, 4)), np.ones((1, 1, 1, 4))
    path = interpolate_latents(start, end, 5)
    assert path.shape == (5, 1, 1, 1, 4)
    np.testing.assert_allclose(path[[0, 2, 4], 0, 0, 0, 0], [0, 0.5, 1])


def test_debris_fraction_counts_voxels_outside_the_largest_26_connected_piece():
    volume = np.zeros((1, 8, 8, 8, 1), np.float32)
    volume[0, 1:4, 1:4, 1:4] = 1.0          # a 27-voxel solid piece
    volume[0, 4, 4, 4] = 1.0                # touches it at a corner only: part of it under 26-connectivity
    volume[0, 7, 0, 7] = 1.0                # two loose voxels, each alone
    volume[0, 0, 7, 0] = 1.0
    assert debris_fractions(volume)[0] == pytest.approx(2 / 30)
    solid, empty = volume.copy(), np.zeros_like(volume)
    solid[0, 7, 0, 7] = solid[0, 0, 7, 0] = 0.0
    assert debris_fractions(np.concatenate([solid, empty])).tolist() == [0.0, 0.0]
    scores = shape_metrics(np.concatenate([volume, solid]), solid)
    assert scores["debris_fraction"] == pytest.approx(1 / 30) and scores["debris_fraction_training"] == 0.0
    # the clean shapes: of [broken, solid] one; the training set [solid] all; an empty volume is not a clean shape
    assert scores["one_piece_fraction"] == 0.5 and scores["one_piece_fraction_training"] == 1.0
    assert one_piece_fractions(np.concatenate([solid, empty, volume, solid])) == 0.5


def test_height_scores_show_samples_that_drop_the_legs():
    chairs = np.zeros((2, 8, 8, 8, 1), np.float32)
    chairs[:, 1:7, 1:7, 4] = 1.0                        # a seat at height 4 (36 voxels)
    chairs[:, 1, 1:7, 5:8] = 1.0                        # a back (18 voxels)
    for x, y in ((1, 1), (1, 6), (6, 1), (6, 6)):     # four legs, heights 0-3 (16 voxels)
        chairs[:, x, y, 0:4] = 1.0
    legless = chairs.copy()
    legless[:, :, :, 0:4] = 0.0
    same = height_scores(chairs, chairs)
    assert same["height_profile_distance"] == 0.0 and same["lowest_quarter_vs_training"] == 1.0
    missing = height_scores(legless, chairs)
    # the lowest quarter (heights 0-1) holds 8 of the 70 voxels; all of them are gone
    assert missing["lowest_quarter_vs_training"] == 0.0
    assert missing["height_profile_distance"] == pytest.approx(16 / 70)  # the legs' share moves to the seat and back
    half = chairs.copy()
    half[:, :, :, 0] = 0.0
    assert height_scores(half, chairs)["lowest_quarter_vs_training"] == pytest.approx(0.5)
    assert set(same) <= set(shape_metrics(chairs, chairs))
    assert np.isnan(height_scores(chairs, np.zeros_like(chairs))["lowest_quarter_vs_training"])
    # per shape, not per set: one chair against a set of a chair and a legless one has twice the data's legs
    assert height_scores(chairs[:1], np.concatenate([chairs[:1], legless[:1]]))["lowest_quarter_vs_training"] == 2.0
    np.testing.assert_array_equal(occupancy_by_height(chairs[0]), occupancy_by_height(chairs))  # one volume
    # data centred in a taller grid (3DShapeNets): the quarter is of the data's own height span, heights 2-3 here
    lifted, lifted_half = np.zeros((2, 8, 8, 12, 1), np.float32), np.zeros((2, 8, 8, 12, 1), np.float32)
    lifted[:, :, :, 2:10], lifted_half[:, :, :, 2:10] = chairs, half
    assert height_scores(lifted_half, lifted)["lowest_quarter_vs_training"] == pytest.approx(0.5)
