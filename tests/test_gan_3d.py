"""Chapter 2 (3D-GAN): the .mat loader and its cache, the discriminator throttle, and every stage end to end."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import scipy.io

from chapters.gan_3d.main import CONNECTIVITY, main
from common import seeds
from conftest import run_main, run_script

SCRIPT = "chapters/gan_3d/main.py"
# The default width and batch: TF's CPU Conv3D is several times slower at some smaller shapes (width 0.0625 at
# batch 4 took 7 s a step here, width 0.125 at batch 16 43 s, the default 1.3 s).
TINY = ["--cube-len", "32", "--steps-per-epoch", "2", "--epochs", "1", "--grid", "4", "--num-shapes", "16"]


def _instance(seed: int) -> np.ndarray:
    volume = np.zeros((30, 30, 30), np.uint8)
    rng = np.random.default_rng(seed)
    low = rng.integers(2, 10, 3)
    volume[low[0]:low[0] + 12, low[1]:low[1] + 8, low[2]:low[2] + 15] = 1
    return volume


def _volumetric_data(root, count=3, category="chair", split="train"):
    folder = root / category / "30" / split
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        scipy.io.savemat(folder / f"{category}_{i:06d}_1.mat", {"instance": _instance(i)})
    return folder


# --- data -------------------------------------------------------------------------------------------------

def test_mat_files_are_padded_to_32_and_zoomed_to_64(tmp_path):
    from chapters.gan_3d.data import load_shapenet

    _volumetric_data(tmp_path)
    small = load_shapenet(tmp_path, "chair", "train", 32, log=lambda _: None)
    assert small.shape == (3, 32, 32, 32) and small.dtype == np.uint8
    np.testing.assert_array_equal(small[1, 1:31, 1:31, 1:31], _instance(1))  # sorted by file name
    assert small[:, 0].sum() == small[:, 31].sum() == 0  # the one-voxel border
    big = load_shapenet(tmp_path, "chair", "train", 64, log=lambda _: None)
    np.testing.assert_array_equal(big[:, ::2, ::2, ::2], small)
    np.testing.assert_array_equal(big[:, 1::2, 1::2, 1::2], small)


def test_a_file_with_another_key_is_named_in_the_error(tmp_path):
    from chapters.gan_3d.data import load_shapenet
    from common.errors import UserError

    folder = _volumetric_data(tmp_path, 2)
    scipy.io.savemat(folder / "chair_bad_1.mat", {"voxels": _instance(0)})
    with pytest.raises(UserError, match=r"chair_bad_1\.mat has no 'instance' array \(found: voxels\)"):
        load_shapenet(tmp_path, "chair", "train", 32, log=lambda _: None)


def test_a_file_of_the_wrong_shape_is_named_in_the_error(tmp_path):
    from chapters.gan_3d.data import load_shapenet
    from common.errors import UserError

    folder = _volumetric_data(tmp_path, 2)
    scipy.io.savemat(folder / "chair_big_1.mat", {"instance": np.zeros((32, 32, 32), np.uint8)})
    with pytest.raises(UserError, match=r"chair_big_1\.mat holds an 'instance' of shape \(32, 32, 32\), expected"):
        load_shapenet(tmp_path, "chair", "train", 32, log=lambda _: None)


def test_the_cache_is_used_and_rebuilt_when_the_folder_changes(tmp_path, monkeypatch):
    from chapters.gan_3d import data

    folder = _volumetric_data(tmp_path, 2)
    first = data.load_shapenet(tmp_path, "chair", "train", 32, log=lambda _: None)
    assert len(list(data.default_cache_dir().glob("shapenet_*_chair_train_32.npz"))) >= 1
    assert sorted(p.name for p in folder.parent.iterdir()) == ["train"]  # nothing written beside the data
    reads = []
    original = data.read_mat
    monkeypatch.setattr(data, "read_mat", lambda path, cube: reads.append(path.name) or original(path, cube))
    np.testing.assert_array_equal(data.load_shapenet(tmp_path, "chair", "train", 32, log=lambda _: None), first)
    assert reads == []  # served from the cache
    scipy.io.savemat(folder / "chair_000009_1.mat", {"instance": _instance(9)})  # a file added
    assert len(data.load_shapenet(tmp_path, "chair", "train", 32, log=lambda _: None)) == 3
    assert len(reads) == 3
    changed = folder / "chair_000000_1.mat"
    scipy.io.savemat(changed, {"instance": np.ones((30, 30, 30), np.uint8)})  # a file rewritten
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert data.load_shapenet(tmp_path, "chair", "train", 32, log=lambda _: None)[0].sum() == 30 ** 3


def test_unknown_category_lists_the_ones_there(tmp_path, capsys):
    _volumetric_data(tmp_path, 1, category="sofa")
    assert run_main(main, ["--data", tmp_path, "--category", "bed"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no folder") and "categories there: sofa" in err


def test_safe_extraction_refuses_a_member_outside_the_folder(tmp_path):
    from common.errors import UserError
    from datasets.fetch_shapenet import safe_extract

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("3DShapeNets/volumetric_data/chair/30/train/a.mat", b"x")
        bundle.writestr("3DShapeNets/volumetric_data/../../../escaped.txt", b"x")
    with pytest.raises(UserError, match="unsafe member"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out").exists()
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as bundle:
        bundle.writestr("3DShapeNets/volumetric_data/chair/30/train/a.mat", b"x")
        bundle.writestr("3DShapeNets/README", b"x")
    assert safe_extract(good, tmp_path / "out", only="volumetric_data/") == 1


# --- the networks and the step ----------------------------------------------------------------------------

@pytest.mark.parametrize("cube_len", [32, 64])
def test_networks_have_the_books_shapes(cube_len):
    from chapters.gan_3d import models

    generator = models.build_generator(cube_len, width=0.0625)
    discriminator = models.build_discriminator(cube_len, width=0.0625)
    assert generator.input_shape == (None, 1, 1, 1, 200)
    assert generator.output_shape == (None, cube_len, cube_len, cube_len, 1)
    assert discriminator.output_shape == (None, 1)
    blocks = 4 if cube_len == 64 else 3
    assert len([l for l in generator.layers if l.__class__.__name__ == "Conv3DTranspose"]) == blocks + 1
    assert len([l for l in discriminator.layers if l.__class__.__name__ == "Conv3D"]) == blocks
    # the book's Conv3D(1, 4, 'valid') on the 4³ map, as Flatten + Dense(1): the same number of weights
    assert discriminator.get_layer("features").output.shape[-1] == 4 ** 3 * round(512 * 0.0625)
    assert discriminator.get_layer("score").count_params() == 4 ** 3 * round(512 * 0.0625) + 1
    book = models.build_generator(64)
    assert [l.filters for l in book.layers if hasattr(l, "filters")] == [512, 256, 128, 64, 1]


def test_the_full_resolution_generator_draws_its_occupancy_from_features_at_full_resolution():
    from chapters.gan_3d import models

    generator = models.build_generator(32, width=0.25, occupancy=0.04, full_resolution=True)
    assert generator.output_shape == (None, 32, 32, 32, 1)
    assert generator.get_layer("deconv_full").output.shape == (None, 32, 32, 32, 16)  # 64 x width features at 32³
    assert generator.get_layer("bn_full") and generator.get_layer("relu_full")
    out = generator.get_layer("conv_out")
    assert (out.kernel_size, out.strides, out.filters) == ((3, 3, 3), (1, 1, 1), 1)
    np.testing.assert_allclose(out.bias.numpy(), [np.log(0.04 / 0.96)], rtol=1e-6)
    hidden = [l.filters for l in generator.layers if l.__class__.__name__ == "Conv3DTranspose"]
    assert hidden == [128, 64, 32, 16]  # the book's four blocks x 0.25: the 32³ book network drops the last


@pytest.mark.parametrize("full_resolution", [False, True])
def test_the_generator_starts_at_the_datas_occupancy_not_a_half_full_cube(full_resolution):
    from chapters.gan_3d import models

    z = np.random.default_rng(0).normal(0, 0.33, (8, 1, 1, 1, 200)).astype(np.float32)
    plain = models.build_generator(32, width=0.0625, full_resolution=full_resolution)
    sparse = models.build_generator(32, width=0.0625, occupancy=0.04, full_resolution=full_resolution)
    out = sparse.get_layer("conv_out" if full_resolution else "deconv_out")
    np.testing.assert_allclose(out.bias.numpy(), [np.log(0.04 / 0.96)], rtol=1e-6)
    assert abs(float(plain(z).numpy().mean()) - 0.5) < 0.05
    assert float(sparse(z).numpy().mean()) < 0.1 and float((sparse(z).numpy() > 0.5).mean()) < 0.05


@pytest.mark.parametrize("threshold, updated", [(0.4, False), (0.6, True)])
def test_discriminator_is_updated_only_while_its_accuracy_is_at_most_the_threshold(threshold, updated):
    import tensorflow as tf

    from chapters.gan_3d import models

    gan = models.VoxelGAN(models.build_generator(32, width=0.0625), models.build_discriminator(32, width=0.0625),
                          d_acc_threshold=threshold)
    gan.compile(*models.optimizers(1e-3, 1e-3, 0.5, 0.5))
    gan.build_optimizers()
    bias = gan.discriminator.get_layer("score").bias
    bias.assign(tf.fill(bias.shape, 6.0))  # D calls everything real: accuracy exactly 0.5
    d_before = [w.numpy() for w in gan.discriminator.trainable_weights]
    g_before = [w.numpy() for w in gan.generator.trainable_weights]
    batch = {"real": tf.ones((2, 32, 32, 32, 1)), **gan.noise(2, tf.constant([1, 2], tf.int64))}
    logs = gan.train_step(batch)
    assert float(logs["d_acc"]) == 0.5 and float(logs["d_updated"]) == float(updated)
    d_same = all(np.array_equal(a, w.numpy()) for a, w in zip(d_before, gan.discriminator.trainable_weights))
    assert d_same is not updated
    assert int(gan.d_optimizer.iterations.numpy()) == int(updated)
    assert not all(np.array_equal(a, w.numpy()) for a, w in zip(g_before, gan.generator.trainable_weights))


def test_packed_discriminator_matches_a_plain_conv_and_reloads_in_safe_mode(tmp_path):
    import keras
    import tensorflow as tf

    from chapters.gan_3d import models

    discriminator = models.build_discriminator(32, width=0.0625, pack=2)
    assert discriminator.input_shape == (None, 32, 32, 32, 2)
    first = discriminator.get_layer("conv1")
    plain = keras.layers.Conv3D(first.filters, 4, strides=2, padding="same")
    x = tf.random.stateless_uniform((2, 32, 32, 32, 2), [0, 1])
    plain.build(x.shape)
    plain.set_weights(first.get_weights())  # the same kernel shape (4, 4, 4, 2, F): the channel padding is internal
    np.testing.assert_allclose(first(x).numpy(), plain(x).numpy(), atol=1e-5)
    discriminator.save(tmp_path / "d.keras")
    again = keras.models.load_model(tmp_path / "d.keras", safe_mode=True)
    np.testing.assert_allclose(again(x).numpy(), discriminator(x).numpy(), atol=1e-6)


def test_noise_is_the_books_latent():
    import tensorflow as tf

    from chapters.gan_3d import models

    gan = models.VoxelGAN(models.build_generator(32, width=0.0625), models.build_discriminator(32, width=0.0625))
    z = gan.noise(4096, tf.constant([0, 3], tf.int64))["z_d"].numpy()
    assert z.shape == (4096, 1, 1, 1, 200)
    assert abs(z.std() - 0.33) < 0.01 and abs(z.mean()) < 0.01


def test_instance_noise_is_what_d_judges_in_training_drawn_from_the_step_key():
    import tensorflow as tf

    from chapters.gan_3d import models

    gan = models.VoxelGAN(models.build_generator(32, width=0.0625), models.build_discriminator(32, width=0.0625),
                          instance_noise=0.15)
    key = tf.constant([0, 5], tf.int64)
    batch = gan.noise(4, key)
    fields = [batch[f"noise_{which}"].numpy() for which in ("real", "d", "g")]
    for field in fields:
        assert field.shape == (4, 32, 32, 32, 1)
        assert abs(field.std() - 0.15) < 0.003 and abs(field.mean()) < 0.003
    assert abs(np.corrcoef(fields[0].ravel(), fields[1].ravel())[0, 1]) < 0.01  # independent draws
    np.testing.assert_array_equal(gan.noise(4, key)["noise_d"].numpy(), fields[1])  # a resume draws the same
    volume = tf.cast(tf.random.stateless_uniform((4, 32, 32, 32, 1), [1, 2]) > 0.9, tf.float32)
    judged = gan.discriminate(volume, batch, "d").numpy()
    np.testing.assert_allclose(judged, gan.discriminator(volume + fields[1], training=True).numpy(), atol=1e-6)
    assert not np.allclose(judged, gan.discriminator(volume, training=True).numpy(), atol=1e-6)
    np.testing.assert_allclose(gan.discriminate(volume, batch, "d", training=False).numpy(),  # sampling is noise-free
                               gan.discriminator(volume, training=False).numpy(), atol=1e-6)
    plain = models.VoxelGAN(gan.generator, gan.discriminator)
    assert not any(name.startswith("noise_") for name in plain.noise(4, key))
    # the average's BatchNorm statistics are computed on noise()'s z_g, drawn without the volumes
    for index, inputs in enumerate(gan.statistics_inputs(batches=2, batch_size=4)):
        drawn = gan.noise(4, tf.constant([0, seeds.AVERAGE_STATISTICS + index], tf.int64))["z_g"]
        np.testing.assert_array_equal(inputs.numpy(), drawn.numpy())


def test_default_trains_with_instance_noise_and_an_average_and_older_runs_resume_without_them(tmp_path, monkeypatch):
    from chapters.gan_3d import stages

    new = tmp_path / "new"
    assert run_main(main, [*TINY, "--run-dir", new]) == 0
    config = json.loads((new / "config.json").read_text())
    assert (config["instance_noise"], config["average_generator"], config["d_lr"]) == (0.25, 0.99, 2e-4)
    assert (config["g_output"], config["label_smoothing"], config["historical_averaging"]) == ("full-res", 0.9, 0.01)
    assert config["connectivity"] == CONNECTIVITY > 0
    import keras

    saved = keras.saving.load_model(new / "models" / "generator.keras", compile=False)
    assert saved.get_layer("deconv_full").filters == 16 and saved.get_layer("conv_out").kernel_size == (3, 3, 3)
    # what a run saved before the flags existed holds (and its G is the book's: a full-res G would not restore)
    run_dir = tmp_path / "run"
    assert run_main(main, [*TINY, "--g-output", "book", "--run-dir", run_dir]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    del config["instance_noise"], config["average_generator"], config["g_output"], config["connectivity"]
    (run_dir / "config.json").write_text(json.dumps(config))
    trained_with, train = [], stages.train
    monkeypatch.setattr(stages, "train", lambda *a: trained_with.append(
        (a[2].instance_noise, a[2].average_generator, a[2].g_output, a[2].connectivity)) or train(*a))
    assert run_main(main, ["--resume", run_dir, "--epochs", "2"]) == 0
    assert trained_with == [(0.0, 0.0, "book", 0.0)]  # the training itself, not only the config it writes
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["instance_noise"], config["average_generator"], config["g_output"]) == (0.0, 0.0, "book")
    assert config["connectivity"] == 0.0


def test_disconnected_share_counts_loose_occupancy_and_its_gradient_closes_a_gap_or_drops_the_piece():
    import tensorflow as tf

    from chapters.gan_3d.models import disconnected_share

    chair = np.zeros((1, 16, 16, 16, 1), np.float32)
    chair[0, 4:12, 4:12, 8:10] = 1.0                   # a 128-voxel seat
    chair[0, 4, 4, 0:8] = 1.0                           # a leg joined to it (8 voxels)
    chair[0, 14, 14, 14] = 1.0                          # and one loose voxel, away from both
    broken = chair.copy()
    broken[0, 4, 4, 6:8] = 0.1                          # the leg's top two voxels almost empty: a gap
    solid = chair.copy()
    solid[0, 14, 14, 14] = 0.0
    share = disconnected_share(tf.constant(np.concatenate([solid, chair, broken]))).numpy()
    assert share[0] == pytest.approx(0.0, abs=1e-6)     # one piece: nothing loose
    assert share[1] == pytest.approx(1 / 137, rel=1e-4)  # the loose voxel, of 137
    # the leg's six voxels under the gap are reached only at the gap's 0.1, and the loose voxel not at all
    assert share[2] == pytest.approx((6 * 0.9 + 1.0) / (128 + 6 + 0.2 + 1), rel=1e-4)
    with tf.GradientTape() as tape:
        occupancy = tf.constant(broken)
        tape.watch(occupancy)
        loss = disconnected_share(occupancy)[0]
    gradient = tape.gradient(loss, occupancy).numpy()[0, ..., 0]
    assert gradient[4, 4, 6] < -0.01 and gradient[4, 4, 0] > 0  # raise the gap, or lower the broken-off leg
    assert gradient[14, 14, 14] > 0                             # lower the loose voxel
    assert abs(gradient[4:12, 4:12, 8:10]).max() < 0.01         # the body's voxels are left alone
    # G's loss carries W times its mean over the first CONNECTIVITY_SAMPLES fakes of the step; W = 0 adds nothing
    from chapters.gan_3d import models

    gan = models.VoxelGAN(models.build_generator(32, width=1 / 64), models.build_discriminator(32, width=1 / 64),
                          connectivity=25.0)
    fakes = tf.constant(np.concatenate([broken, chair, broken, chair, solid]))
    assert models.CONNECTIVITY_SAMPLES == 4
    expected = 25.0 * disconnected_share(fakes[:4]).numpy().mean()
    assert gan.generator_penalty(fakes).numpy() == pytest.approx(expected) and expected > 0.5
    assert models.VoxelGAN(gan.generator, gan.discriminator).generator_penalty(fakes).numpy() == 0.0


def test_the_generators_last_layer_defaults_to_full_res_at_32_and_the_books_at_64(tmp_path, monkeypatch):
    from chapters.gan_3d import stages

    handed = []
    monkeypatch.setattr(stages, "train", lambda volumes, run, args: handed.append((args.g_output, args.label_smoothing)))
    for index, flags in enumerate([["--cube-len", "64"], ["--cube-len", "64", "--g-output", "full-res"],
                                   ["--loss", "hinge"]]):
        assert run_main(main, [*flags, "--num-shapes", "2", "--run-dir", tmp_path / str(index)]) == 0
    # the default smoothing is of BCE's real target, so hinge drops it; typed with hinge, it is refused
    assert handed == [("book", 0.9), ("full-res", 0.9), ("full-res", 1.0)]
    assert run_main(main, ["--loss", "hinge", "--label-smoothing", "0.8", "--run-dir", tmp_path / "refused"]) == 2
    assert len(handed) == 3 and not (tmp_path / "refused").exists()


# --- end to end -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run on .mat files (the 3DShapeNets path); the procedural path is the chapter's default run."""
    root = tmp_path_factory.mktemp("gan3d")
    _volumetric_data(root / "data", 5)
    run_dir = root / "run"
    assert run_main(main, [*TINY, "--data", root / "data", "--run-dir", run_dir]) == 0
    assert json.loads((run_dir / "config.json").read_text())["data"] == str(root / "data")
    return run_dir


def test_training_writes_renders_models_and_history(trained):
    from PIL import Image

    for name in ("samples/epoch_0001.png", "models/generator.keras", "models/discriminator.keras",
                 "history.csv", "checkpoints/checkpoint"):
        assert (trained / name).exists(), name
    picture = np.asarray(Image.open(trained / "samples" / "epoch_0001.png"))
    assert picture.ndim == 3 and picture.shape[2] == 3
    header = (trained / "history.csv").read_text().splitlines()[0]
    assert "d_acc" in header and "d_updated" in header
    assert list((trained / "logs" / "train").glob("events.out.tfevents.*"))


def test_a_resume_trains_on_the_runs_own_shapes_not_the_flags_defaults(trained, monkeypatch):
    from chapters.gan_3d import stages

    shapes = []
    monkeypatch.setattr(stages, "train", lambda volumes, run, args: shapes.append((len(volumes), args.data)))
    assert run_main(main, ["--resume", trained, "--epochs", "2"]) == 0
    # the run's 5 .mat shapes, not the 512 procedural ones of the defaults
    assert shapes == [(5, json.loads((trained / "config.json").read_text())["data"])]


def test_a_resume_with_another_generator_is_one_sentence_not_damage_and_changes_nothing(trained, capsys):
    files = [path for path in sorted(trained.rglob("*")) if path.is_file()]
    before = [path.read_bytes() for path in files]
    assert run_main(main, ["--resume", trained, "--epochs", "2", "--g-output", "book"]) == 2  # it trained full-res
    err = capsys.readouterr().err
    assert "does not fit these models (were the flags that shape the networks changed?)" in err
    assert "damaged" not in err and "start a new run" not in err
    assert [path for path in sorted(trained.rglob("*")) if path.is_file()] == files
    assert [path.read_bytes() for path in files] == before


def test_sample_stage_exports_png_npy_and_obj(trained, tmp_path):
    from PIL import Image

    assert run_main(main, ["--stage", "sample", "--run-dir", trained, "--num", "2", "--out", tmp_path / "s.png"]) == 0
    assert np.asarray(Image.open(tmp_path / "s.png")).shape[2] == 3
    assert run_main(main, ["--stage", "sample", "--run-dir", trained, "--num", "3", "--format", "npy",
                           "--out", tmp_path / "s.npy"]) == 0
    shapes = np.load(tmp_path / "s.npy")
    assert shapes.shape == (3, 32, 32, 32) and set(np.unique(shapes)) <= {0, 1}
    assert run_main(main, ["--stage", "sample", "--run-dir", trained, "--num", "2", "--format", "obj",
                           "--out", tmp_path / "objs"]) == 0
    meshes = sorted((tmp_path / "objs").glob("*.obj"))
    assert [m.name for m in meshes] == ["shape_000.obj", "shape_001.obj"]
    from common.voxels import voxel_mesh

    faces = sum(line.startswith("f ") for line in meshes[1].read_text().splitlines())
    assert faces == len(voxel_mesh(shapes[1])[1])  # the same latent (seed 0) gives the same shape


def test_interpolate_and_evaluate_stages(trained, tmp_path):
    assert run_main(main, ["--stage", "interpolate", "--run-dir", trained, "--num", "3", "--strips", "1",
                           "--out", tmp_path / "strip.png"]) == 0
    assert (tmp_path / "strip.png").exists()
    assert run_main(main, ["--stage", "evaluate", "--run-dir", trained, "--num", "6"]) == 0
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["samples"] == 6 and metrics["training_shapes"] == 5 and metrics["epoch"] == 1
    scores = metrics["metrics"]
    for key in ("nearest_train_iou_mean", "novel_fraction", "pairwise_iou_mean"):
        assert 0.0 <= scores[key] <= 1.0, key
    if scores["occupancy_mean"] > 0:
        assert 0.0 <= scores["height_profile_distance"] <= 1.0
    else:  # a one-epoch G may draw nothing: no material has no height profile (null), and no legs
        assert scores["height_profile_distance"] is None and scores["lowest_quarter_vs_training"] == 0.0
    assert scores["lowest_quarter_vs_training"] >= 0.0


def test_saved_generator_loads_in_a_fresh_process_in_safe_mode(trained, tmp_path):
    result = run_script(SCRIPT, "--stage", "sample", "--run-dir", trained, "--num", "2", "--format", "npy",
                        "--out", tmp_path / "fresh.npy")
    assert result.returncode == 0, result.stderr[-2000:]
    expected = tmp_path / "here.npy"
    assert run_main(main, ["--stage", "sample", "--run-dir", trained, "--num", "2", "--format", "npy",
                           "--out", expected]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "fresh.npy"), np.load(expected))


def test_bad_flags_are_one_sentence(tmp_path, capsys):
    assert run_main(main, ["--data", tmp_path / "missing"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_main(main, ["--category", "sofa"]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert run_main(main, ["--d-acc-threshold", "0"]) == 2
    assert "--d-acc-threshold" in capsys.readouterr().err
