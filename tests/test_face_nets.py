"""The Keras ports of face-api's face-recognition and age/gender nets against the original TF.js model.

tests/fixtures/face_api_reference.npz holds inputs and the ORIGINAL model's outputs, made under Node by
tools/face_api_reference.js (see tools/convert_face_api.py --fixture).
"""

import os
import tempfile

for _var in ("KERAS_HOME", "MPLCONFIGDIR"):  # tests/conftest.py may already have set these
    if _var not in os.environ:
        os.environ[_var] = tempfile.mkdtemp(prefix=f"{_var.lower()}_")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from skimage import data  # noqa: E402

from chapters.age_cgan import face_nets  # noqa: E402
from common.errors import UserError  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "face_api_reference.npz"
ATOL = 1e-4  # measured: 3.7e-7 (descriptors), 7.6e-6 (age in years), 7e-7 (gender probabilities)


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def fr():
    return face_nets.face_recognition_model()


@pytest.fixture(scope="module")
def age():
    return face_nets.age_model()


def tanh(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype("float32") / 127.5 - 1.0


def astronaut_face() -> np.ndarray:
    return tanh(data.astronaut()[75:186, 166:277])[None]


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def test_face_recognition_matches_original(ref, fr):
    native = face_nets.face_recognition_model(input_size=150, input_range="pixels")
    d = max_diff(native(ref["fr_inputs"].astype("float32")), ref["fr_out_descriptor"])
    assert d < ATOL, f"150x150 pixels: max abs diff {d:.2e} vs the original"
    # 64x64 project images: the in-graph resize must match the original's own bilinear resize.
    d = max_diff(fr(tanh(ref["small_inputs"])), ref["small_out_descriptor"])
    assert d < ATOL, f"64x64 [-1, 1] images: max abs diff {d:.2e} vs the original"


def test_age_gender_matches_original(ref, age):
    native = face_nets.age_model(input_size=112, input_range="pixels")
    for model, x, tag in [(native, ref["age_inputs"].astype("float32"), "age"),
                          (age, tanh(ref["small_inputs"]), "small")]:
        out = model(x)
        d_age = max_diff(out["age"][:, 0], ref[f"{tag}_out_age"])
        d_gender = max_diff(out["gender"], ref[f"{tag}_out_gender"])
        assert d_age < ATOL and d_gender < ATOL, f"{tag}: max abs diff age {d_age:.2e}, gender {d_gender:.2e}"


def test_same_face_is_close_and_another_person_is_far(fr):
    face = astronaut_face()
    camera = tanh(np.repeat(data.camera()[128:198, 190:260, None], 3, axis=-1))[None]  # eyebrows..chin
    d_flip = np.linalg.norm(fr(face) - fr(face[:, :, ::-1]))
    d_other = np.linalg.norm(fr(face) - fr(camera))
    assert d_flip < 0.4, d_flip  # measured 0.25
    assert d_other > 0.7, d_other  # measured 0.79


def test_age_on_astronaut_is_a_plausible_adult(age):
    years = float(age(astronaut_face())["age"][0, 0])
    assert 20 < years < 60, years  # measured 28.8


def test_keras_file_round_trip_in_safe_mode(tmp_path, fr, age):
    x = tanh(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)))
    for model in (fr, age):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        # Eager calls: a predict() retraced for other shapes may pick other kernels (~1e-7 apart).
        before, after = model(x), loaded(x)
        for key in (before if isinstance(before, dict) else [None]):
            np.testing.assert_array_equal(after[key] if key else after, before[key] if key else before)


def test_missing_tensor_is_a_user_error(tmp_path):
    with np.load(face_nets.AGE_GENDER_WEIGHTS, allow_pickle=False) as z:
        kept = {k: z[k] for k in z.files if not k.startswith("fc.age.weights")}
    np.savez(tmp_path / "broken.npz", **kept)
    with pytest.raises(UserError, match="fc.age.weights"):
        face_nets.age_model(weights_path=tmp_path / "broken.npz")
    with pytest.raises(UserError, match="no such file"):
        face_nets.age_model(weights_path=tmp_path / "absent.npz")
