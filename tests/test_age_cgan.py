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
EVALUATE_KEYS = ("age_accuracy_real", "age_accuracy_real_per_class", "age_accuracy_generated",
                 "age_accuracy_generated_per_class", "age_class_read_generated", "identity_ratio",
                 "identity_ratio_real", "refine_gain", "fid_faces_cnn", "targets")
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
    # the book's parameter counts (34.9 M, 18.3 M, 1.6 M): --arch book --width 1 is the book's networks
    assert (g.count_params(), e.count_params(), d.count_params()) == (34_885_251, 18_287_268, 1_569_665)
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
    some_photo = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(some_photo)
    assert run_main(main, ["--stage", "age", "--run-dir", run, "--image", some_photo]) == 2
    assert "--stage optimize" in _error(capsys)
    assert run_main(main, ["--stage", "age", "--run-dir", run]) == 2
    assert "needs --image" in _error(capsys)
    assert run_main(main, ["--stage", "encoder", "--run-dir", run, "--strategy", "multiworker"]) == 2
    assert "one machine" in _error(capsys)

    run = tmp_path / "e2e"
    assert run_main(main, [*TINY, "--stage", "gan", "--run-dir", run]) == 0
    for name in ("models/generator.keras", "models/discriminator.keras", "samples/epoch_0001.png", "history.csv"):
        assert (run / name).exists(), name
    grid = np.asarray(Image.open(run / "samples" / "epoch_0001.png"))
    assert grid.shape == (8 * 66 + 2, 6 * 66 + 2, 3)  # 8 latents x 6 ages
    assert run_main(main, ["--stage", "optimize", "--run-dir", run]) == 2
    assert "--stage encoder" in _error(capsys)
    assert run_main(main, [*TINY, "--stage", "encoder", "--run-dir", run]) == 0
    # the encoder and optimize stages are trained by fit_gan like the GAN stage, each in its own folder: checkpoints,
    # TensorBoard events, history, a reconstruction picture per epoch; a resume keeps the stage's epoch length
    for name in ("checkpoints/checkpoint", "history.csv", "samples/epoch_0001.png"):
        assert (run / "encoder" / name).exists(), name
    assert any((run / "encoder" / "logs").iterdir()) and (run / "models" / "encoder.keras").exists()
    capsys.readouterr()
    assert run_main(main, ["--stage", "encoder", "--run-dir", run, "--resume", "--encoder-steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "epochs of 3 steps (a checkpoint each), so it trains 6 steps" in out
    assert f"resumed {run / 'encoder'} at epoch 1 (step 3)" in out
    assert run_main(main, ["--stage", "encoder", "--run-dir", run, "--resume", "--encoder-steps", "6"]) == 0
    assert "has already trained 6 steps; pass --encoder-steps N (N > 6)" in capsys.readouterr().out
    assert run_main(main, [*TINY, "--stage", "optimize", "--run-dir", run]) == 0
    assert (run / "optimize" / "checkpoints" / "checkpoint").exists() and any((run / "optimize" / "logs").iterdir())
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

    assert run_main(main, ["--stage", "evaluate", "--run-dir", run, "--eval-faces", "4", "--refine-steps", "3",
                           "--eval-samples", "8", "--eval-identities", "3"]) == 0
    report = json.loads((run / "metrics.json").read_text())
    result = {**report, **report["metrics"]}  # the figures in "metrics", the details and targets beside them
    for key in EVALUATE_KEYS:
        assert key in result, key
    assert "age_accuracy_generated" in report["metrics"] and "targets" not in report["metrics"]
    assert "optimize_fr_distance_last" in report  # what the optimize stage recorded is kept
    assert set(result["age_accuracy_generated_per_class"]) == {"0-18", "19-29", "30-39", "40-49", "50-59", "60+"}
    assert result["reconstruction_fr_distance_refined"] < result["reconstruction_fr_distance_encoder"]
    assert 0 < result["refine_gain"] < 1 and 0 <= result["age_accuracy_real"] <= 1
    assert set(result["targets"]) == {"age_accuracy_generated", "identity_ratio", "refine_gain", "fid_faces_cnn"}

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
    assert accuracy > 0.8  # 6 classes: chance is 0.17; 0.923 on 2,000 held-out faces (0.827 before its retraining)


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

    from chapters.age_cgan.stages import face_recognition

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


def _procedural_generator(respects_age: bool):
    """G(z, y) that draws the data itself: the identity from z, the age from y (or, age-blind, from z)."""
    from datasets.procedural_faces import render_faces, sample_identities

    middles = np.array([10, 24, 35, 45, 55, 72], np.float32)

    def generate(z, y):
        seeds = (np.abs(z[:, 0]) * 1e6).astype(np.int64) % (2 ** 31)
        people = [sample_identities(1, int(s)) for s in seeds]
        identities = {k: np.concatenate([p[k] for p in people]) for k in people[0]}
        classes = np.argmax(y, 1) if respects_age else (np.abs(z[:, 1]) * 1e3).astype(np.int64) % 6
        return render_faces(identities, middles[classes], 64)

    return generate


def test_evaluate_figures_fail_a_generator_that_ignores_the_age():
    """The age target is what tells an age-blind G (trivially good at identity) from one that ages faces."""
    import keras

    from chapters.age_cgan import evaluation as ev
    from chapters.age_cgan.data import BUCKET_NAMES, embedded_faces, people_at_six_ages
    from chapters.age_cgan.main import AGE_CLASSIFIER

    classifier = keras.models.load_model(AGE_CLASSIFIER, safe_mode=True, compile=False)
    classify = lambda images: np.argmax(classifier.predict(images, batch_size=128, verbose=0), -1)  # noqa: E731
    embed = lambda images: images[:, ::4, ::4].reshape(len(images), -1)  # a stand-in for the FR net  # noqa: E731
    real, classes = embedded_faces(240, 4243)
    metrics = ev.age_accuracy_real(classify, real.astype("float32") / 127.5 - 1, classes, BUCKET_NAMES)
    metrics["identity_ratio_real"] = ev.identity_ratio(embed, people_at_six_ages(8, 5))["ratio"]
    scored = {}
    for respects_age in (True, False):
        images, target = ev.generated_by_age(_procedural_generator(respects_age), 40, 100, 6, seed=3)
        result = dict(metrics, **ev.age_accuracy_generated(classify, images, target, BUCKET_NAMES))
        people = images.reshape(6, 40, 64, 64, 3)[:, :8].swapaxes(0, 1)
        result["identity_ratio"] = ev.identity_ratio(embed, people)["ratio"]
        scored[respects_age] = (result, ev.targets(result))
    ages, blind = scored[True], scored[False]
    assert ages[1]["age_accuracy_generated"]["met"] and ages[0]["age_class_read_rises"]
    assert not blind[1]["age_accuracy_generated"]["met"]
    assert blind[0]["age_accuracy_generated"] < 0.4  # about chance (1/6)
    assert blind[0]["identity_ratio"] < ages[0]["identity_ratio"]  # why the age target comes first
    assert blind[1]["identity_ratio"]["met"]  # ... the identity target alone cannot tell them apart


def test_the_cpu_dcgan_pair_conditions_on_age_and_reloads_in_safe_mode(tmp_path):
    import keras

    from chapters.age_cgan import models

    g, d = models.build_dcgan_generator(filters=8), models.build_projection_discriminator(filters=8)
    assert g.output.shape == (None, 64, 64, 3) and d.output.shape == (None, 1)
    assert d.get_layer("score") is not None  # --loss hinge reads the raw score
    z = np.random.default_rng(0).standard_normal((2, 100)).astype("float32")
    young, old = np.eye(6, dtype="float32")[[0, 0]], np.eye(6, dtype="float32")[[5, 5]]
    assert not np.allclose(g([z, young]), g([z, old]))  # the age reaches the image
    images = np.asarray(g([z, young]))
    assert not np.allclose(d([images, young]), d([images, old]))  # ... and D's verdict (the projection)
    for model in (g, d):
        model.save(tmp_path / f"{model.name}.keras")
        loaded = keras.models.load_model(tmp_path / f"{model.name}.keras", safe_mode=True, compile=False)
        inputs = [z, young] if model is g else [images, young]
        np.testing.assert_allclose(loaded(inputs), model(inputs), rtol=1e-5, atol=1e-6)


def test_the_auxiliary_age_classifier_is_the_projection_heads_class_term():
    import keras
    import tensorflow as tf

    from chapters.age_cgan import models

    g, d = models.build_dcgan_generator(filters=8), models.build_projection_discriminator(filters=8)
    gan = models.AuxiliaryAgeGAN(g, d, models.LATENT_DIM, 6, age_weight=1.0)
    score = keras.Model(d.inputs, d.get_layer("score").output)
    faces = np.random.default_rng(1).uniform(-1, 1, (3, 64, 64, 3)).astype("float32")
    logits = np.asarray(gan.age_logits(faces, training=False))
    scores = np.concatenate([np.asarray(score([tf.constant(faces), tf.one_hot([k] * 3, 6)], training=False))
                             for k in range(6)], axis=1)
    # D's score for age k is a label-free part plus logit k: the softmax over ages is D's own age reading
    np.testing.assert_allclose(scores - scores[:, :1], logits - logits[:, :1], rtol=1e-4, atol=1e-4)

    batch = {**gan.noise(4, tf.constant([0, 1], tf.int64)), "real": tf.constant(faces[:2].repeat(2, 0)),
             "labels": tf.one_hot([0, 5, 0, 5], 6)}
    expected = tf.nn.softmax_cross_entropy_with_logits(batch["labels"], gan.age_logits(batch["real"]))
    # the same networks without the auxiliary term, to see what it adds to D's update
    g0, d0 = models.build_dcgan_generator(filters=8), models.build_projection_discriminator(filters=8)
    g0.set_weights(g.get_weights())
    d0.set_weights(d.get_weights())
    plain = models.AuxiliaryAgeGAN(g0, d0, models.LATENT_DIM, 6, age_weight=0.0)
    for model in (gan, plain):
        model.compile(d_optimizer=models.optimizer(), g_optimizer=models.optimizer())
        model.build_optimizers()
    logs = gan.train_step(batch)
    plain.train_step(batch)
    # the reported d_age is D's cross-entropy on the real faces' ages, and it moves D's class vectors
    assert float(logs["d_age"]) == pytest.approx(float(tf.reduce_mean(expected)), rel=1e-4)
    assert 0 < float(logs["g_age"]) < 10
    assert not np.allclose(np.asarray(d.get_layer("age_projection").embedding),
                           np.asarray(d0.get_layer("age_projection").embedding), atol=1e-6)


def test_a_nan_in_the_encoder_stage_stops_it_with_exit_3_and_saves_nothing(tmp_path, capsys, monkeypatch):
    import tensorflow as tf

    import chapters.age_cgan.encoder_training as encoder_training

    run = tmp_path / "run"
    assert run_main(main, [*TINY, "--stage", "gan", "--run-dir", run]) == 0
    monkeypatch.setattr(encoder_training, "euclidean", lambda a, b: tf.fill([tf.shape(a)[0]], float("nan")))
    capsys.readouterr()
    assert run_main(main, [*TINY, "--stage", "encoder", "--run-dir", run]) == 3
    err = capsys.readouterr().err
    assert "latent_error became nan in epoch 1, step 1" in err and "none yet" in err
    assert not (run / "models" / "encoder.keras").exists() and not list((run / "encoder" / "checkpoints").glob("ckpt-*"))
