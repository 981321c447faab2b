"""Data loading and inference: disk pipelines against in-memory ones, the book's loaders against ours, and
tiled super-resolution of a large photo. Every data set is written by the benchmark into a temporary folder.
"""
from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bench.common import MatmulUnit, PeakRSS, interleave, median, summary


# --- writing the data ----------------------------------------------------------------------------------------

def _smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A photo-like uint8 image: smooth colour fields plus a little noise (JPEG-compresses like a photo)."""
    from PIL import Image

    base = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    noise = rng.normal(0, 6, (size, size, 3))
    return np.clip(np.asarray(base, np.float32) + noise, 0, 255).astype(np.uint8)


def write_jpegs(folder: Path, count: int, size: int, per_folder: int = 1000, seed: int = 0) -> list[Path]:
    """`count` size x size JPEGs in subfolders of `per_folder` (like an extracted image set)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{i // per_folder:03d}" / f"{i:06d}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_smooth_image(rng, size)).save(path, quality=90)
        paths.append(path)
    return paths


def write_voxel_mats(root: Path, count: int, seed: int = 0) -> Path:
    """3DShapeNets' layout: <root>/chair/30/train/*.mat, each a 30^3 `instance` array (a random box)."""
    from scipy.io import savemat

    folder = root / "chair" / "30" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        low = rng.integers(0, 10, 3)
        high = low + rng.integers(10, 20, 3)
        instance = np.zeros((30, 30, 30), np.uint8)
        instance[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = 1
        savemat(folder / f"chair_{i:05d}_1.mat", {"instance": instance}, do_compression=False)
    return root


def write_wiki(root: Path, count: int, size: int = 128, mats: tuple[int, ...] = ()) -> dict[int, Path]:
    """A wiki_crop tree of `count` face-sized JPEGs (<root>/NN/*.jpg) and a wiki.mat per entry of `mats`
    listing the first n of them with the real file's fields (dob datenum, photo_taken, face scores, ...)."""
    import datetime

    from scipy.io import savemat

    write_jpegs(root, count, size, per_folder=100, seed=2)
    rng = np.random.default_rng(3)
    years = rng.integers(1940, 1995, count)
    dob = np.array([datetime.date(int(y), 3, 1).toordinal() + 366 for y in years], np.float64)
    taken = (years + rng.integers(15, 60, count)).astype(np.uint16)
    out = {}
    for n in mats:
        cells = np.empty((1, n), dtype=object)
        for i in range(n):
            cells[0, i] = np.array([f"{i // 100:03d}/{i:06d}.jpg"])
        wiki = {"dob": dob[None, :n], "photo_taken": taken[None, :n], "full_path": cells,
                "gender": np.ones((1, n)), "face_score": np.full((1, n), 3.0),
                "second_face_score": np.full((1, n), np.nan)}
        out[n] = root / f"wiki_{n}.mat"
        savemat(out[n], {"wiki": wiki})
    return out


# --- disk pipelines against in-memory ones ------------------------------------------------------------------

def _epoch(model, count: int, take: Callable, batch: int, steps: int, epoch: int) -> float:
    """One epoch of `steps` steps from a fresh stream (its start-up paid, as at the start of a run)."""
    from common.data.stream import training_stream

    start = time.perf_counter()
    iterator = iter(training_stream(count, take, batch, seed=0, start_step=epoch * steps, noise=model.noise))
    for _ in range(steps):
        logs = model.train_function(iterator)
    float(next(iter(logs.values())))
    return time.perf_counter() - start


def _compare_epochs(model, disk: tuple[int, Callable], memory: tuple[int, Callable], batch: int, steps: int,
                    rounds: int) -> dict:
    """Epochs streamed from disk against epochs from memory, interleaved, on one compiled model."""
    model.build_optimizers()
    model.make_train_function()
    counter = {"disk": 0, "memory": 0}

    def side(name, loader):
        def run():
            counter[name] += 1
            return _epoch(model, *loader, batch, steps, counter[name])
        return run

    times = interleave({"disk": side("disk", disk), "memory": side("memory", memory)}, rounds=rounds, warmup=1)
    images = batch * steps
    disk_s, memory_s = summary(times["disk"], images), summary(times["memory"], images)
    return {"batch": batch, "steps_per_epoch": steps, "rounds": rounds, "disk": disk_s, "memory": memory_s,
            "ratio": disk_s["per_s"] / memory_s["per_s"]}


def _timed(function):
    start = time.perf_counter()
    value = function()
    return value, round(time.perf_counter() - start, 3)


def pipeline(work: Path, quick: bool, rounds: int, log=print) -> dict:
    """Each chapter's from-disk stream against the same steps on arrays already in memory."""
    import keras
    import tensorflow as tf

    from common.data import in_memory

    results = {}
    rounds = min(rounds, 3)  # epochs are long: three of each side (after a warm-up one) keep the section in budget
    steps = 10 if quick else 30

    # (1) a folder of JPEGs -> the anime chapter's CPU networks (make train-anime-dcgan: dcgan, 32 filters, 32 px)
    from chapters.anime_dcgan import models as anime
    from common.data.images import image_folder, load_folder_array
    from common.gan import GAN

    clock = time.perf_counter()
    count = 1000 if quick else 3000
    jpegs = work / "pipeline_jpegs"
    write_jpegs(jpegs, count, 64, seed=1)
    array = load_folder_array(jpegs, 32, 3, log=lambda _: None)
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    gan = GAN(anime.build_generator("dcgan", 32, 100, 32), anime.build_discriminator("dcgan", 32, 32), 100)
    d_opt, g_opt = anime.optimizers("dcgan")
    gan.compile(d_optimizer=d_opt, g_optimizer=g_opt)
    to_float = lambda row: {"real": tf.cast(row["real"], tf.float32) / 127.5 - 1.0}  # noqa: E731
    disk, setup = _timed(lambda: image_folder(jpegs, 32, log=lambda _: None))
    result = _compare_epochs(gan, disk, (len(array), in_memory({"real": array}, to_float)), 32, steps, rounds)
    results["anime_jpegs"] = {"what": f"{len(array)} 64x64 JPEGs (decoded, resized to 32) -> DCGAN 32 px, 32 "
                                      f"filters (make train-anime-dcgan)", **result, "disk_setup_once_s": setup,
                              "seconds": round(time.perf_counter() - clock, 1)}
    _log_pipeline(log, "anime_jpegs", results["anime_jpegs"])

    # (2) 3DShapeNets .mat files -> the 3D-GAN at its default networks (32^3, width 0.25, batch 16)
    from chapters.gan_3d import models as voxel_models
    from chapters.gan_3d.data import load_shapenet

    clock = time.perf_counter()
    mats = 200 if quick else 600
    voxel_root = work / "volumetric_data"
    write_voxel_mats(voxel_root, mats)
    cache = work / "voxel_cache"
    with_cache = time.perf_counter()
    volumes = load_shapenet(voxel_root, "chair", "train", 32, cache_dir=cache, log=lambda _: None)
    cold = time.perf_counter() - with_cache
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    gan = voxel_models.VoxelGAN(voxel_models.build_generator(32, width=0.25),
                                voxel_models.build_discriminator(32, width=0.25), d_acc_threshold=1.0)
    d_opt, g_opt = voxel_models.optimizers(1e-3, 2e-4, 0.5, 0.5)
    gan.compile(d_optimizer=d_opt, g_optimizer=g_opt)
    to_volume = lambda row: {"real": tf.cast(row["real"], tf.float32)[..., None]}  # noqa: E731

    loaded, setup = _timed(lambda: load_shapenet(voxel_root, "chair", "train", 32, cache_dir=cache,
                                                 log=lambda _: None))
    result = _compare_epochs(gan, (len(loaded), in_memory({"real": loaded}, to_volume)),
                             (len(volumes), in_memory({"real": volumes}, to_volume)), 16, 3 if quick else 6, rounds)
    results["gan_3d_mat"] = {"what": f"{mats} .mat voxel files (read into memory once per run, from the .npz cache "
                                     f"after the first) -> 3D-GAN 32^3, width 0.25 (the chapter's defaults)", **result,
                             "disk_setup_once_s": setup,
                             "first_read_of_the_mat_files_s": round(cold, 2),
                             "seconds": round(time.perf_counter() - clock, 1)}
    _log_pipeline(log, "gan_3d_mat", results["gan_3d_mat"],
                  f"; parsing the {mats} .mat files the first time: {cold:.1f} s, from the cache {setup:.2f} s")

    # (3) wiki.mat + image tree -> Age-cGAN gan stage at make train-age-cgan's CPU size (width 0.5, batch 32)
    from chapters.age_cgan import models as age_models
    from chapters.age_cgan.data import NUM_CLASSES, decode_face, parse_wiki_mat, wiki_take
    from common.gan import ConditionalGAN

    clock = time.perf_counter()
    n = 1000 if quick else 2000
    mat = work / "wiki" / f"wiki_{n}.mat"
    index = parse_wiki_mat(mat, work / "wiki")
    files = tf.data.Dataset.from_tensor_slices(index.paths).map(decode_face, num_parallel_calls=tf.data.AUTOTUNE)
    faces = np.concatenate(list(files.batch(256).as_numpy_iterator()))
    labels = np.eye(NUM_CLASSES, dtype=np.float32)[index.classes]
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    gan = ConditionalGAN(age_models.build_generator(width=0.5), age_models.build_discriminator(width=0.5),
                         age_models.LATENT_DIM, NUM_CLASSES)
    gan.compile(d_optimizer=age_models.optimizer(), g_optimizer=age_models.optimizer())

    parsed, setup = _timed(lambda: parse_wiki_mat(mat, work / "wiki"))
    result = _compare_epochs(gan, (len(parsed.paths), wiki_take(parsed)),
                             (len(faces), in_memory({"real": faces, "labels": labels})), 32, 6 if quick else 12, rounds)
    results["age_cgan_wiki"] = {"what": f"wiki.mat ({n} rows) + {n} 128x128 JPEGs -> Age-cGAN gan stage, width 0.5 "
                                        f"(make train-age-cgan)", **result, "disk_setup_once_s": setup,
                                "seconds": round(time.perf_counter() - clock, 1)}
    _log_pipeline(log, "age_cgan_wiki", results["age_cgan_wiki"])
    return results


def _log_pipeline(log, name: str, r: dict, extra: str = "") -> None:
    log(f"  {name}: from disk {r['disk']['per_s']:.1f} img/s, in memory {r['memory']['per_s']:.1f} img/s, "
        f"ratio {r['ratio']:.2f} ({r['rounds']} epochs of {r['steps_per_epoch']} steps each; the loader's set-up "
        f"once per run {r['disk_setup_once_s']:.2f} s{extra}; {r['seconds']:.0f} s)", flush=True)


# --- SRGAN: the book's per-step sampler against our tf.data crops -----------------------------------------------

def book_srgan_sampler(pattern: str, batch: int, hr_shape=(64, 64), lr_shape=(16, 16), rng=np.random):
    """The book's sample_images (chapter 5): glob the folder, pick random files, read and resize each one
    (scipy.misc.imread/imresize then, PIL here: imresize was PIL's resize), random flips, stack."""
    from PIL import Image

    all_images = glob.glob(pattern)
    images_batch = rng.choice(all_images, size=batch)
    high, low = [], []
    for img in images_batch:
        with Image.open(img) as image:
            image = image.convert("RGB")
            hr = np.asarray(image.resize(hr_shape, Image.BILINEAR), np.float32)
            lr = np.asarray(image.resize(lr_shape, Image.BILINEAR), np.float32)
        if rng.random() < 0.5:
            hr, lr = np.fliplr(hr), np.fliplr(lr)
        high.append(hr)
        low.append(lr)
    return np.array(high) / 127.5 - 1.0, np.array(low) / 127.5 - 1.0


def srgan_loader(work: Path, quick: bool, rounds: int, log=print) -> dict:
    """Images/s of our tf.data crops (batch 16) and of the book's sampler at the book's batch (1) and at 16.

    Each timed unit of ours starts a fresh stream (its start-up is paid, as at every run's start), so nothing
    is prefetched while the book's side runs."""
    from chapters.srgan.images import training_crops
    from common.data.stream import training_stream

    folder = work / "photos"
    pattern = str(folder / "*" / "*.jpg")
    count = len(glob.glob(pattern))
    batch, hr = 16, 64
    clock = time.perf_counter()
    examples, take = training_crops(folder, hr, 1, seed=0, log=lambda _: None)
    index_s = time.perf_counter() - clock
    ours_batches = 25 if quick else 100
    book_calls = {1: 20 if quick else 60, 16: 3 if quick else 8}
    counter = {"n": 0}
    rng = np.random.RandomState(0)

    def ours():
        counter["n"] += 1
        iterator = iter(training_stream(examples, take, batch, seed=0, start_step=counter["n"] * ours_batches))
        for _ in range(ours_batches):
            out = next(iterator)
        out["hr"].numpy()

    def book(size):
        def run():
            for _ in range(book_calls[size]):
                book_srgan_sampler(pattern, size, (hr, hr), (hr // 4, hr // 4), rng)
        return run

    times = interleave({"ours": ours, "book_batch_1": book(1), "book_batch_16": book(16)}, rounds=rounds, warmup=1)
    ours_s = summary(times["ours"], batch * ours_batches)
    book1, book16 = summary(times["book_batch_1"], book_calls[1]), summary(times["book_batch_16"], 16 * book_calls[16])
    start = time.perf_counter()
    glob.glob(pattern)
    glob_s = time.perf_counter() - start
    result = {"what": f"{count} 64x64 JPEGs -> HR {hr}x{hr} + LR {hr // 4}x{hr // 4} pairs with random flips",
              "images": count, "batch": batch, "ours": ours_s, "book": book1, "book_batch_16": book16,
              "ratio": ours_s["per_s"] / book1["per_s"], "ratio_vs_book_batch_16": ours_s["per_s"] / book16["per_s"],
              "ours_batches_per_round": ours_batches, "book_calls_per_round": book_calls, "rounds": rounds,
              "one_glob_of_the_folder_s": round(glob_s, 4), "ours_index_s": round(index_s, 2),
              "seconds": round(time.perf_counter() - clock, 1)}
    log(f"  ours {ours_s['per_s']:.0f} img/s; the book's sampler {book1['per_s']:.0f} img/s at its batch of 1 "
        f"(ratio {result['ratio']:.1f}x), {book16['per_s']:.0f} img/s at 16 ({result['ratio_vs_book_batch_16']:.1f}x); "
        f"one glob of the {count} files {glob_s * 1000:.0f} ms; our one-time header check {index_s:.1f} s; "
        f"{result['seconds']:.0f} s", flush=True)
    return result


# --- Age-cGAN: the book's np.concatenate loader against our stream --------------------------------------------

def book_wiki_loader(paths: list[str], shape=(64, 64, 3)) -> np.ndarray:
    """The book's load_images (chapter 3): one image at a time, concatenated onto the array read so far."""
    from keras.utils import img_to_array, load_img

    images = None
    for path in paths:
        loaded = np.expand_dims(img_to_array(load_img(path, target_size=shape[:2])), axis=0)
        images = loaded if images is None else np.concatenate([images, loaded], axis=0)
    return images


def our_wiki_pass(mat: Path, root: Path, batch: int = 32) -> int:
    """One pass of the chapter's stream over every face of wiki.mat (what a training epoch reads)."""
    from chapters.age_cgan.data import parse_wiki_mat, wiki_take
    from common.data.stream import training_stream

    index = parse_wiki_mat(mat, root)
    steps = len(index.paths) // batch
    seen = 0
    for _, element in zip(range(steps), training_stream(len(index.paths), wiki_take(index), batch, seed=0)):
        seen += int(element["real"].shape[0])
    return seen


def wiki_loader(work: Path, sizes: list[int], budget_s: float, log=print) -> dict:
    """Time and peak RSS of both loaders at each size; the book's skipped (and extrapolated) past the budget."""
    from chapters.age_cgan.data import parse_wiki_mat

    root = work / "wiki"
    results: dict = {"sizes": sizes, "ours": {}, "book": {}, "memory_method": ""}
    clock = time.perf_counter()
    for n in sizes:
        mat = root / f"wiki_{n}.mat"
        with PeakRSS() as peak:
            start = time.perf_counter()
            seen = our_wiki_pass(mat, root)
            seconds = time.perf_counter() - start
        results["memory_method"] = peak.method
        results["ours"][n] = {"seconds": seconds, "peak_rss_delta_mb": peak.delta_mb, "images": seen}
        paths = parse_wiki_mat(mat, root).paths
        predicted = _predict_quadratic(results["book"], n)
        spent = time.perf_counter() - clock
        if predicted is not None and spent + predicted > budget_s:
            results["book"][n] = {"skipped": True, "predicted_seconds": predicted,
                                  "predicted_peak_rss_delta_mb": 2 * n * 64 * 64 * 3 * 4 / 2 ** 20}
            log(f"  {n}: ours {seconds:.1f} s, +{peak.delta_mb:.0f} MB; book's loader skipped (would take about "
                f"{predicted:.0f} s, past this section's budget)", flush=True)
            continue
        with PeakRSS() as peak:
            start = time.perf_counter()
            array = book_wiki_loader(paths)
            book_s = time.perf_counter() - start
        results["book"][n] = {"seconds": book_s, "peak_rss_delta_mb": peak.delta_mb, "array_mb": array.nbytes / 2 ** 20}
        del array
        log(f"  {n}: ours {seconds:.1f} s, +{results['ours'][n]['peak_rss_delta_mb']:.0f} MB; book "
            f"{book_s:.1f} s, +{peak.delta_mb:.0f} MB", flush=True)
    results.update(_linearity(results["ours"]), seconds=round(time.perf_counter() - clock, 1))
    return results


def _predict_quadratic(measured: dict, n: int) -> float | None:
    """Seconds the book's loader would take at n, from a fit a*n + b*n^2 to the sizes measured so far."""
    points = [(k, v["seconds"]) for k, v in measured.items() if not v.get("skipped")]
    if not points:
        return None
    if len(points) == 1:
        k, s = points[0]
        return s * (n / k) ** 2  # the worst case: all of it quadratic
    x = np.array([[k, k * k] for k, _ in points], np.float64)
    y = np.array([s for _, s in points], np.float64)
    (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(max(a * n + b * n * n, points[-1][1] * n / points[-1][0]))


def _linearity(ours: dict) -> dict:
    """Seconds per image at the largest size over the smallest (1.0 = linear) and the memory growth."""
    sizes = sorted(ours)
    small, large = ours[sizes[0]], ours[sizes[-1]]
    per_image = (large["seconds"] / sizes[-1]) / (small["seconds"] / sizes[0])
    return {"ours_time_per_image_ratio": per_image,
            "ours_memory_growth_mb": large["peak_rss_delta_mb"] - small["peak_rss_delta_mb"]}


# --- SRGAN inference: tiled upscaling of a large photo -----------------------------------------------------

def upscale(work: Path, size: int, log=print) -> dict:
    """upscale_file on a size x size photo with an untrained generator of the book's size (16 blocks)."""
    from PIL import Image

    from chapters.srgan import models
    from chapters.srgan.images import upscale_file
    from chapters.srgan.inference import Upscaler
    from common.flops import forward_flops

    photo = work / f"photo_{size}.png"
    Image.fromarray(_smooth_image(np.random.default_rng(5), size)).save(photo)
    generator = models.build_generator(16, bicubic_skip=True)  # untrained: weights do not change the speed
    upscaler = Upscaler(generator, tile=128)
    upscaler(np.zeros((min(size, 160), min(size, 160), 3), np.float32))  # trace once, untimed
    target = work / f"photo_{size}_x4.png"
    matmul = MatmulUnit("float32")  # the MFU's reference rate, measured before and after the upscale
    matmul_times = interleave({"matmul": matmul.run}, rounds=2)["matmul"]
    with PeakRSS() as peak:
        start = time.perf_counter()
        width, height = upscale_file(upscaler, photo, target)
        seconds = time.perf_counter() - start
    matmul_times += interleave({"matmul": matmul.run}, rounds=2, warmup=0)["matmul"]
    executed = upscaler.flops(size, size)  # what the sub-pixel tail and the body do (margins not counted)
    books = forward_flops(generator, 1, (size, size, 3))  # the book's layers, one pass over the whole image
    rate = executed / seconds
    matmul_rate = matmul.flops / median(matmul_times)
    result = {"input": f"{size}x{size}", "output": f"{width}x{height}", "tile": 128,
              "tiles": upscaler.tiles(size, size), "seconds": seconds, "peak_rss_delta_mb": peak.delta_mb,
              "memory_method": peak.method, "output_raw_mb": width * height * 3 / 2 ** 20,
              "output_file_mb": target.stat().st_size / 2 ** 20, "generator": "untrained, 16 residual blocks",
              "predicted_seconds_1024_input": seconds * (1024 / size) ** 2,
              "flops": executed, "books_flops": books, "gflops_per_s": rate / 1e9,
              "matmul_gflops_per_s_float32": matmul_rate / 1e9, "matmul_times_s": matmul_times,
              "mfu_float32": rate / matmul_rate}
    target.unlink()
    log(f"  {size}x{size} -> {width}x{height}: {seconds:.1f} s, peak RSS +{peak.delta_mb:.0f} MB (the output image "
        f"alone is {result['output_raw_mb']:.0f} MB raw); a 1024x1024 input would take about "
        f"{result['predicted_seconds_1024_input']:.0f} s; {executed / 1e9:.0f} GFLOP done ({books / 1e9:.0f} in the "
        f"book's layers), {rate / 1e9:.1f} GFLOP/s, MFU {result['mfu_float32']:.2f} "
        f"(float32 matmul {matmul_rate / 1e9:.1f} GFLOP/s)", flush=True)
    return result

