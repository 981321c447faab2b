"""Faces with age labels: the IMDB-WIKI `wiki_crop` set (streamed from disk) or the embedded procedural faces.

wiki.mat holds one struct `wiki` with 1 x N fields: `full_path` (relative jpg paths), `dob` (MATLAB datenum of
the birth date), `photo_taken` (year), `face_score` (-inf: no face found), `second_face_score` (NaN: no second
face), plus `gender`, `name`, `face_location`. The age is computed as the book does: birth date from the
datenum, photo taken in the middle of `photo_taken`, so a birthday after June counts one year less.
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserError
from datasets.procedural_faces import AGE_BUCKETS, age_to_class, make_dataset

IMAGE_SIZE = 64
NUM_CLASSES = len(AGE_BUCKETS)  # always 6, even when a small set lacks some ages
BUCKET_NAMES = ("0-18", "19-29", "30-39", "40-49", "50-59", "60+")


def book_age(dob: float, photo_taken: float) -> float:
    """The book's calculate_age: years between the birth date (MATLAB datenum) and mid-`photo_taken`.

    Returns NaN when either value is missing or not a real date."""
    if not (math.isfinite(dob) and math.isfinite(photo_taken)):
        return math.nan
    try:
        birth = datetime.date.fromordinal(max(int(dob) - 366, 1))
    except (ValueError, OverflowError):
        return math.nan
    return float(photo_taken - birth.year - (0 if birth.month < 7 else 1))


@dataclass
class WikiIndex:
    paths: list[str]
    ages: np.ndarray
    classes: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)
    total: int = 0
    with_second_face: int = 0

    def report(self) -> str:
        counts = np.bincount(self.classes, minlength=NUM_CLASSES)
        return (f"wiki.mat: {self.total} rows, kept {len(self.paths)}; dropped {self.dropped['no_face']} with no "
                f"face (face_score -inf), {self.dropped['bad_age']} with an age outside 1-100 or no date, "
                f"{self.dropped['missing_file']} whose file is missing; {self.with_second_face} kept rows show a "
                f"second face; per age class " + ", ".join(f"{n} {c}" for n, c in zip(BUCKET_NAMES, counts)))


def _field(struct, name: str, mat: Path) -> np.ndarray:
    try:
        value = struct[name]
    except (KeyError, ValueError, IndexError):
        raise UserError(f"{mat} has no field {name!r} in its 'wiki' struct; expected the wiki.mat of wiki_crop.tar")
    value = np.asarray(value)
    while value.dtype == object and value.size == 1 and isinstance(value.flat[0], np.ndarray) \
            and value.flat[0].dtype != object and name != "full_path":
        value = value.flat[0]
    return value.reshape(-1) if name != "full_path" else value


def _strings(cells: np.ndarray) -> list[str]:
    out = []
    for cell in np.asarray(cells, dtype=object).reshape(-1):
        while isinstance(cell, np.ndarray):
            cell = cell.reshape(-1)[0] if cell.size else ""
        out.append(str(cell))
    return out


def parse_wiki_mat(mat_path: str | Path, root: str | Path | None = None) -> WikiIndex:
    """Reads wiki.mat and keeps the rows with a face, an age of 1-100 and an existing image under `root`."""
    from scipy.io import loadmat

    mat_path = Path(mat_path)
    root = Path(root) if root is not None else mat_path.parent
    try:
        mat = loadmat(str(mat_path))
    except Exception as error:  # scipy raises MatReadError, ValueError, ... for an empty or damaged file
        raise UserError(f"cannot read {mat_path} as a MATLAB file ({error})") from None
    if "wiki" not in mat:
        raise UserError(f"{mat_path} holds no 'wiki' struct (found: {', '.join(k for k in mat if not k.startswith('__'))})")
    struct = mat["wiki"][0, 0] if mat["wiki"].size == 1 else mat["wiki"]
    dob = _field(struct, "dob", mat_path).astype(np.float64)
    taken = _field(struct, "photo_taken", mat_path).astype(np.float64)
    paths = _strings(_field(struct, "full_path", mat_path))
    score = _field(struct, "face_score", mat_path).astype(np.float64)
    second = _field(struct, "second_face_score", mat_path).astype(np.float64)
    if not len(dob) == len(taken) == len(paths) == len(score) == len(second):
        raise UserError(f"{mat_path}: fields dob, photo_taken, full_path, face_score, second_face_score differ in "
                        f"length ({len(dob)}, {len(taken)}, {len(paths)}, {len(score)}, {len(second)})")
    dropped = {"no_face": 0, "bad_age": 0, "missing_file": 0}
    kept_paths, kept_ages, kept_second = [], [], 0
    for d, t, p, s, s2 in zip(dob, taken, paths, score, second):
        if not np.isfinite(s):  # -inf: the face detector found no face (NaN would be as bad)
            dropped["no_face"] += 1
            continue
        age = book_age(d, t)
        if not (1 <= age <= 100):  # NaN compares False: no date is an implausible age
            dropped["bad_age"] += 1
            continue
        if not (root / p).is_file():
            dropped["missing_file"] += 1
            continue
        kept_paths.append(str(root / p))
        kept_ages.append(age)
        kept_second += bool(np.isfinite(s2))
    ages = np.asarray(kept_ages, np.float32)
    return WikiIndex(kept_paths, ages, age_to_class(ages), dropped, len(dob), kept_second)


def find_wiki(data: str | Path) -> WikiIndex:
    """`--data` is the extracted wiki_crop folder (with wiki.mat) or the wiki.mat file itself."""
    path = Path(data)
    if not path.exists():
        raise UserError(f"--data {path} does not exist; fetch it with python datasets/fetch_wiki.py")
    mat = path / "wiki.mat" if path.is_dir() else path
    if not mat.is_file():
        raise UserError(f"{path} has no wiki.mat; pass the extracted wiki_crop folder (python datasets/fetch_wiki.py)")
    index = parse_wiki_mat(mat)
    print(index.report())
    if not index.paths:
        raise UserError(f"{mat} lists no usable face (see the counts above)")
    return index


# --- streaming -------------------------------------------------------------------------------------------

def decode_face(path, size: int = IMAGE_SIZE):
    """tf: file path -> (size, size, 3) float32 in [-1, 1] (wiki_crop images are face crops already)."""
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), (size, size), antialias=True)
    image.set_shape((size, size, 3))
    return tf.clip_by_value(image / 127.5 - 1.0, -1.0, 1.0)


def wiki_take(index: WikiIndex):
    """A `take(i)` for common.data.stream.training_stream: one decoded face and its one-hot age, from disk."""
    import tensorflow as tf

    paths = tf.constant(index.paths)
    labels = tf.one_hot(tf.constant(index.classes, tf.int32), NUM_CLASSES)

    def take(i):
        return {"real": decode_face(tf.gather(paths, i)), "labels": tf.gather(labels, i)}

    return take


def wiki_sample(index: WikiIndex, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` faces picked at random (read from disk, batched): (images in [-1, 1], classes)."""
    import tensorflow as tf

    pick = np.random.default_rng(seed).permutation(len(index.paths))[:count]
    rows = tf.data.Dataset.from_tensor_slices(([index.paths[i] for i in pick], index.classes[pick]))
    # A file listed in wiki.mat that fails to decode (truncated, not an image) is dropped with its class.
    faces = rows.map(lambda path, age: (decode_face(path), age)).ignore_errors(log_warning=True).batch(64)
    batches = list(faces.as_numpy_iterator())
    decoded = sum(len(images) for images, _ in batches)
    if not decoded:
        raise UserError(f"none of the {len(pick)} faces picked from wiki.mat could be decoded")
    if decoded < len(pick):
        print(f"skipped {len(pick) - decoded} of {len(pick)} wiki faces that failed to decode")
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def embedded_faces(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Procedural faces (datasets/procedural_faces.py) spread evenly over the six ages: (uint8 images, classes)."""
    images, _, classes = make_dataset(count, seed, IMAGE_SIZE)
    return np.rint((images + 1) * 127.5).astype(np.uint8), classes


def load_photo(path: str | Path, crop: bool = True, size: int = IMAGE_SIZE) -> np.ndarray:
    """A user's photo -> (1, size, size, 3) in [-1, 1]: centre square crop (unless crop=False), then resize."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--image {path} does not exist")
    from common.data.images import check_image, to_8bit

    why = check_image(path)  # the header first: a decompression bomb is refused before it is decoded
    if why is not None:
        raise UserError(f"--image {path} is not an image that can be read ({why})")
    try:
        with Image.open(path) as image:
            image = to_8bit(image).convert("RGB")
    except Exception as error:  # UnidentifiedImageError, OSError, SyntaxError (a damaged PNG), ...
        raise UserError(f"--image {path} is not an image that can be read ({error})") from None
    if crop:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    image = image.resize((size, size), Image.BICUBIC)
    return (np.asarray(image, np.float32) / 127.5 - 1.0)[None]


def people_at_six_ages(people: int, seed: int) -> np.ndarray:
    """(people, 6, 64, 64, 3) in [-1, 1]: procedural identities, each drawn once in every age class."""
    from datasets.procedural_faces import render_faces, sample_identities

    rng = np.random.default_rng([seed, 2])
    lo = np.array([4, 19, 30, 40, 50, 60], np.float64)
    hi = np.array([19, 30, 40, 50, 60, 88], np.float64)
    ages = np.floor(rng.uniform(lo, hi, (people, NUM_CLASSES))).astype(np.float32)
    identities = {k: np.repeat(v, NUM_CLASSES, axis=0) for k, v in sample_identities(people, seed).items()}
    faces = render_faces(identities, ages.reshape(-1), IMAGE_SIZE)
    return faces.reshape(people, NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE, 3)
