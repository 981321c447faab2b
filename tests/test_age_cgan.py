"""Chapter 3 (Age-cGAN): wiki.mat parsing, the label-tiling layer, stage prerequisites and a tiny end to end run."""
from __future__ import annotations

import datetime
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chapters.age_cgan.main import main
from conftest import run_main, run_script

SCRIPT = "chapters/age_cgan/main.py"
TINY = ["--width", "0.125", "--num-faces", "48", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
        "--encoder-steps", "3", "--optimize-steps", "2", "--optimize-batch", "4"]


def _datenum(year: int, month: int, day: int) -> float:
    return float(datetime.date(year, month, day).toordinal() + 366)  # MATLAB datenum


def _write_wiki(root: Path) -> None:
    """A wiki_crop folder in miniature: wiki.mat with the real field layout and a few jpgs."""
    from scipy.io import savemat

    rows = [  # (path, dob, photo_taken, face_score, second_face_score, file written?)
        ("17/10000217_1981-05-05_2009.jpg", _datenum(1981, 5, 5), 2009, 4.3, np.nan, True),   # 28 (May: <7)
        ("48/10000548_1925-04-04_1964.jpg", _datenum(1925, 9, 4), 1964, 2.6, 1.9, True),      # 38 (Sep: -1)
        ("12/100012_1948-07-03_2008.jpg", _datenum(1948, 7, 3), 2008, -np.inf, np.nan, True),  # no face
        ("65/10001965_1930-05-23_1961.jpg", np.nan, 1961, 1.9, np.nan, True),                  # no dob
        ("16/10002116_1971-05-31_2012.jpg", _datenum(1971, 5, 31), 2012, 3.4, np.nan, False),  # file missing
        ("02/10002702_1960-11-09_2012.jpg", _datenum(1900, 11, 9), 2012, 1.5, np.nan, True),   # 111: implausible
        ("23/10003423_2002-01-01_2010.jpg", _datenum(2002, 1, 1), 2010, 5.0, np.nan, True),    # 8
    ]
    for i, (path, *_, write) in enumerate(rows):
        if write:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            size = (40 + 10 * i, 50)
            mode = "L" if i == 1 else "RGB"  # wiki_crop has grayscale jpgs too
            Image.new(mode, size, 90 + 20 * i).save(root / path)
    n = len(rows)
    cells = np.empty((1, n), dtype=object)
    for i, row in enumerate(rows):
        cells[0, i] = np.array([row[0]])
    names = np.empty((1, n), dtype=object)
    for i in range(n):
        names[0, i] = np.array([f"person {i}"])
    wiki = {"dob": np.array([[r[1] for r in rows]]), "photo_taken": np.array([[r[2] for r in rows]], np.uint16),
            "full_path": cells, "gender": np.array([[1.0, 0.0, 1.0, np.nan, 1.0, 0.0, 1.0]]), "name": names,
            "face_location": np.array([[np.array([[1.0, 1.0, 30.0, 30.0]]) for _ in rows]], dtype=object),
            "face_score": np.array([[r[3] for r in rows]]),
            "second_face_score": np.array([[r[4] for r in rows]])}
    savemat(root / "wiki.mat", {"wiki": wiki})


def test_wiki_mat_is_parsed_like_the_book_and_bad_rows_are_counted(tmp_path, capsys):
    from chapters.age_cgan.data import find_wiki

    _write_wiki(tmp_path)
    index = find_wiki(tmp_path)
    assert [Path(p).name for p in index.paths] == ["10000217_1981-05-05_2009.jpg", "10000548_1925-04-04_1964.jpg",
                                                   "10003423_2002-01-01_2010.jpg"]
    np.testing.assert_array_equal(index.ages, [28, 38, 8])
    np.testing.assert_array_equal(index.classes, [1, 2, 0])
    assert index.dropped == {"no_face": 1, "bad_age": 2, "missing_file": 1}
    assert index.total == 7 and index.with_second_face == 1
    out = capsys.readouterr().out
    assert "kept 3" in out and "1 with no face" in out and "2 with an age outside 1-100" in out


def test_wiki_faces_stream_from_disk_in_batches(tmp_path):
    import tensorflow as tf

    from chapters.age_cgan.data import find_wiki, wiki_take
    from common.data.stream import training_stream

    _write_wiki(tmp_path)
    batch = next(iter(training_stream(3, wiki_take(find_wiki(tmp_path)), 2, seed=0)))
    assert batch["real"].shape == (2, 64, 64, 3) and batch["labels"].shape == (2, 6)
    assert float(tf.reduce_min(batch["real"])) >= -1 and float(tf.reduce_max(batch["real"])) <= 1
    np.testing.assert_array_equal(tf.reduce_sum(batch["labels"], 1), [1, 1])


def test_wiki_mat_without_the_struct_is_one_sentence(tmp_path, capsys):
    from scipy.io import savemat

    savemat(tmp_path / "wiki.mat", {"imdb": {"dob": np.zeros((1, 2))}})
    assert run_main(main, ["--data", tmp_path]) == 2
    assert "no 'wiki' struct" in capsys.readouterr().err


def test_label_tiling_layer_saves_and_loads_in_safe_mode(tmp_path):
    import keras

    from chapters.age_cgan import models

    d = models.build_discriminator(width=0.125)
    assert any(isinstance(layer, models.TileLabels) for layer in d.layers)
    assert not any(type(layer).__name__ == "Lambda" for layer in d.layers)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 64, 64, 3)).astype("float32")
    labels = np.eye(6, dtype="float32")[[0, 3, 5]]
    d.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(loaded([images, labels]), d([images, labels]), rtol=1e-5, atol=1e-6)
    tiled = models.TileLabels(32)(labels)
    assert tiled.shape == (3, 32, 32, 6)
    np.testing.assert_array_equal(tiled[:, 17, 5], labels)


def test_the_book_networks_have_the_book_shapes():
    from chapters.age_cgan import models

    e, g, d = models.build_encoder(), models.build_generator(), models.build_discriminator()
    assert e.output.shape == (None, 100) and g.output.shape == (None, 64, 64, 3) and d.output.shape == (None, 1)
    assert [l.filters for l in e.layers if hasattr(l, "filters")] == [32, 64, 128, 256]
    assert [l.filters for l in g.layers if hasattr(l, "filters")] == [128, 64, 3]
    assert [l.filters for l in d.layers if hasattr(l, "filters")] == [64, 128, 256, 512]
    assert [l.units for l in g.layers if hasattr(l, "units")] == [2048, 256 * 8 * 8]
    assert d.get_layer("tile_age").output.shape == (None, 32, 32, 6)
    opt = models.optimizer()
    assert (float(opt.learning_rate), opt.beta_1, opt.epsilon) == (pytest.approx(2e-4), 0.5, 1e-7)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_stages_in_order_with_each_prerequisite_named(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"width": 0.125, "num_faces": 48, "seed": 0, "data": None}))
    for stage, needs in (("encoder", "--stage gan"), ("optimize", "--stage encoder"),
                         ("evaluate", "--stage optimize")):
        assert run_main(main, ["--stage", stage, "--run-dir", run]) == 2
        assert needs in _error(capsys), stage
    assert run_main(main, ["--stage", "age", "--run-dir", run, "--image", "x.png"]) == 2
    assert "--stage optimize" in _error(capsys)
    assert run_main(main, ["--stage", "age", "--run-dir", run]) == 2
    assert "needs --image" in _error(capsys)

    run = tmp_path / "e2e"
    assert run_main(main, [*TINY, "--stage", "gan", "--run-dir", run]) == 0
    for name in ("models/generator.keras", "models/discriminator.keras", "samples/epoch_0001.png", "history.csv"):
        assert (run / name).exists(), name
    grid = np.asarray(Image.open(run / "samples" / "epoch_0001.png"))
    assert grid.shape == (8 * 66 + 2, 6 * 66 + 2, 3)  # 8 latents x 6 ages
    assert run_main(main, ["--stage", "optimize", "--run-dir", run]) == 2
    assert "--stage encoder" in _error(capsys)
    assert run_main(main, [*TINY, "--stage", "encoder", "--run-dir", run]) == 0
    assert run_main(main, [*TINY, "--stage", "optimize", "--run-dir", run]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["optimize_fr_distance_last"] > 0 and "encoder_final_latent_error" in metrics

    photo = tmp_path / "photo.jpg"  # not square: the centre crop is used
    from chapters.age_cgan.data import embedded_faces

    face = embedded_faces(1, 99)[0][0]
    Image.fromarray(np.pad(face, ((0, 0), (20, 20), (0, 0)), mode="edge")).save(photo)
    capsys.readouterr()
    strip = tmp_path / "strip.png"
    assert run_main(main, ["--stage", "age", "--run-dir", run, "--image", photo, "--refine-steps", "2",
                           "--out", strip]) == 0
    assert np.asarray(Image.open(strip)).shape == (66 + 2, 7 * 66 + 2, 3)  # input + six ages
    assert "after 2 refinement steps" in capsys.readouterr().out

    assert run_main(main, ["--stage", "evaluate", "--run-dir", run, "--eval-faces", "4", "--refine-steps", "3"]) == 0
    result = json.loads((run / "metrics.json").read_text())["evaluate"]
    assert set(result["age_accuracy_encoded"]) == {"0-18", "19-29", "30-39", "40-49", "50-59", "60+"}
    assert result["identity_distance_refined"] < result["identity_distance_encoder"]
    assert 0 <= result["estimator_accuracy_on_real_faces"] <= 1

    # the saved models (with TileLabels) load in safe mode in a fresh process
    check = tmp_path / "check.py"
    check.write_text("import sys, keras\nsys.path.insert(0, '.')\nimport chapters.age_cgan.models\n"
                     f"for n in ('discriminator', 'generator', 'encoder_optimized'):\n"
                     f"    keras.models.load_model(r'{run}/models/' + n + '.keras', safe_mode=True, compile=False)\n"
                     "print('ok')\n")
    result = run_script(str(check), timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_the_shipped_age_classifier_reads_procedural_ages():
    import keras

    from chapters.age_cgan.main import AGE_CLASSIFIER
    from datasets.procedural_faces import make_dataset

    classifier = keras.models.load_model(AGE_CLASSIFIER, safe_mode=True, compile=False)
    faces, _, classes = make_dataset(90, 4242)  # identities it never saw
    accuracy = np.mean(np.argmax(classifier.predict(faces, verbose=0), -1) == classes)
    assert accuracy > 0.5  # 6 classes: chance is 0.17; 0.645 on 2,000 held-out faces


def test_photo_loading_crops_or_squashes(tmp_path):
    from chapters.age_cgan.data import load_photo
    from common.errors import UserError

    picture = np.zeros((30, 90, 3), np.uint8)
    picture[:, 30:60] = 255  # a white centre square between black sides
    Image.fromarray(picture).save(tmp_path / "wide.png")
    cropped = load_photo(tmp_path / "wide.png")
    squashed = load_photo(tmp_path / "wide.png", crop=False)
    assert cropped.shape == squashed.shape == (1, 64, 64, 3)
    assert cropped.min() > 0.9 and squashed[0, :, :10].max() < -0.9
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="not an image"):
        load_photo(tmp_path / "bad.jpg")


def test_fr_model_can_be_any_keras_embedding_model(tmp_path):
    import keras

    from chapters.age_cgan.main import face_recognition

    image = keras.Input((32, 32, 3))
    keras.Model(image, keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(image))).save(tmp_path / "fr.keras")
    fr = face_recognition(str(tmp_path / "fr.keras"))
    assert fr(np.zeros((2, 64, 64, 3), "float32")).shape == (2, 8)
    from common.errors import UserError

    with pytest.raises(UserError, match="--fr-model"):
        face_recognition("facenet.h5")


def test_fetch_wiki_refuses_paths_outside_the_target(tmp_path):
    from common.errors import UserError
    from datasets.fetch_wiki import safe_extract

    def tar_with(name: str) -> Path:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.tar"
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        return path

    target = tmp_path / "out"
    assert safe_extract(tar_with("wiki_crop/wiki.mat"), target) == 1
    assert (target / "wiki_crop" / "wiki.mat").read_bytes() == b"abc"
    for bad in ("../evil.txt", "/tmp/evil.txt", "wiki_crop/../../evil.txt"):
        with pytest.raises(UserError, match="outside"):
            safe_extract(tar_with(bad), target)
    assert not (tmp_path / "evil.txt").exists()
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tar:
        info = tarfile.TarInfo("wiki_crop/escape")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UserError, match="link"):
        safe_extract(link, target)
