"""Property test: any bytes saved as an image file are skipped and counted, or refused in one sentence.

The rule of the image loaders (common.data.images): a bad file among good ones is skipped and counted in the
log, a folder with nothing usable is a UserError, and nothing else ever escapes, neither in the up-front
check, nor in the PIL decode of `load_folder_array` (vanilla GAN digit folders), nor in the tf.data stream that
the chapters train on.
"""
from __future__ import annotations

import io
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from common.errors import UserError

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):  # keep hypothesis' files out of the repository
    set_hypothesis_home_dir(tempfile.mkdtemp(prefix="hypothesis-"))


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    picture = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


VALID = {"png": _encoded("PNG"), "jpg": _encoded("JPEG"), "grey.png": _encoded("PNG", "L"),
         "gif": _encoded("GIF", "P")}


def _broken_chunk_png() -> bytes:
    """A PNG whose header is fine but whose IDAT length is wrong: Pillow raises SyntaxError when decoding."""
    data = bytearray(VALID["png"])
    at = data.index(b"IDAT") - 4
    data[at:at + 4] = struct.pack(">I", 7)
    return bytes(data)


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    """A valid PNG/JPEG/GIF with a few bytes overwritten, inserted or cut off."""
    kind = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[kind])
    for _ in range(draw(st.integers(1, 6))):
        what = draw(st.sampled_from(["set", "insert", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if what == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif what == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:]
    return ("jpg" if kind == "jpg" else "png"), bytes(data)


_ANY_FILE = st.one_of(mutated(), st.tuples(st.sampled_from(["png", "jpg", "gif", "bmp"]), st.binary(max_size=512)))


def _check_loaders(extension: str, data: bytes) -> None:
    import tensorflow as tf

    from common.data.images import image_folder, load_folder_array, usable_images, find_images
    from common.data.stream import training_stream

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "a_good.png").write_bytes(VALID["png"])
        (folder / f"b_fuzzed.{extension}").write_bytes(data)
        logged: list[str] = []

        usable = usable_images(find_images(folder), logged.append)
        assert 1 <= len(usable) <= 2
        if len(usable) == 1:  # refused by the header check: counted in one log line with its reason
            assert usable[0].name == "a_good.png"
            assert any(line.startswith("skipped 1 of 2 image files (b_fuzzed") for line in logged), logged

        logged.clear()
        digits = load_folder_array(folder, 8, 1, logged.append)  # the PIL decode (vanilla_gan digit folders)
        assert digits.shape[1:] == (8, 8, 1) and digits.dtype == np.uint8 and 1 <= len(digits) <= 2
        if len(digits) == 1:
            assert any("skipped" in line and "b_fuzzed" in line for line in logged), logged

        count, take = image_folder(folder, 8, log=lambda _: None)  # the tf.data decode (anime, srgan, ...)
        seen = 0
        for batch in training_stream(count, take, 1, seed=0).take(3):
            image = batch["real"].numpy()
            assert image.shape == (1, 8, 8, 3) and np.isfinite(image).all()
            assert image.min() >= -1.0 and image.max() <= 1.0
            seen += 1
        assert seen == 3  # the stream goes on past a file that fails to decode
        del tf


@settings(max_examples=30, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_ANY_FILE)
@example(("png", b""))
@example(("jpg", b"\xff\xd8\xff"))
@example(("png", VALID["png"][:40]))
@example(("png", _broken_chunk_png()))  # passes the header check, Pillow raises SyntaxError in decode
def test_random_and_mutated_bytes_are_skipped_and_counted_never_a_crash(case):
    extension, data = case
    _check_loaders(extension, data)


@settings(max_examples=15, deadline=None, database=None, derandomize=True)
@given(st.binary(max_size=256))
def test_a_folder_of_only_garbage_is_refused_in_one_sentence(data):
    from common.data.images import find_images, usable_images

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "only.png").write_bytes(b"\x89PNG\r\n\x1a\n" + data if len(data) % 2 else data)
        (folder / "also.jpg").write_bytes(data[::-1])
        try:
            usable = usable_images(find_images(folder), lambda _: None)
        except UserError as error:
            message = str(error)
            assert "none of the 2 image files could be read" in message and "\n" not in message
        else:  # random bytes that happen to form a readable header are fine too, but only real images
            for path in usable:
                with Image.open(path) as image:
                    assert image.size[0] * image.size[1] > 0


def test_broken_chunk_png_really_passes_the_header_check():
    """Keeps the @example above meaningful: the header is readable, only the decode fails."""
    from common.data.images import check_image

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.png"
        path.write_bytes(_broken_chunk_png())
        assert check_image(path) is None
        try:
            with Image.open(path) as image:
                image.load()
        except SyntaxError:
            pass
        else:
            raise AssertionError("expected Pillow to raise SyntaxError for the broken chunk")
