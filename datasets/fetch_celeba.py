"""Fetches CelebA's aligned face images (img_align_celeba.zip, 202,599 JPEGs of 178x218, 1.4 GB) for SRGAN.

    python datasets/fetch_celeba.py [OUT_DIR]                    # default: datasets/celeba
    python datasets/fetch_celeba.py [OUT_DIR] --zip FILE.zip     # an img_align_celeba.zip you downloaded
    python chapters/srgan/main.py --data datasets/celeba/img_align_celeba --hr-size 128

CelebA (Liu, Luo, Wang, Tang; ICCV 2015) is for non-commercial research only: read its terms at
https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html before downloading. The archive is the official Google Drive
file (the one torchvision's CelebA loader fetches, with the MD5 the CelebA page publishes); it is checked after
download and unpacked safely (no absolute paths, no `..`, no links, only image files). Google Drive sometimes
refuses large downloads ("quota exceeded"); then download the file in a browser and pass --zip.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import UserError  # noqa: E402
from datasets.download import download, main_guard, sha256_of  # noqa: E402

FILE_ID = "0B7EVK8r0v71pZjFTYXZWM3FlRnM"  # img_align_celeba.zip in the CelebA Google Drive folder
URL = f"https://drive.usercontent.google.com/download?id={FILE_ID}&export=download&confirm=t"
MD5 = "00d2c5bc6d35e252742224ab0c1e8fcb"  # as published by the CelebA authors (and checked by torchvision)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def md5_of(path: Path) -> str:
    import hashlib

    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_extract(archive: Path, out: Path) -> int:
    """Unpacks the image files of `archive` under `out`; refuses members that would land outside it."""
    root = out.resolve()
    count = 0
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            name = member.filename
            if member.is_dir():
                continue
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue  # only images are needed
            mode = (member.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise UserError(f"{archive} holds a symbolic link ({name}); refusing to unpack it")
            target = (root / name).resolve()
            if os.path.isabs(name) or ".." in Path(name).parts or root not in target.parents:
                raise UserError(f"{archive} holds a path outside the target folder ({name}); refusing to unpack it")
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            with zipped.open(member) as source, open(part, "wb") as sink:
                shutil.copyfileobj(source, sink, length=1 << 20)
            os.replace(part, target)
            count += 1
    return count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python datasets/fetch_celeba.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).resolve().parent / "celeba",
                        metavar="OUT_DIR", help="folder to download and unpack into; the images land in "
                                                "OUT_DIR/img_align_celeba (default: %(default)s)")
    parser.add_argument("--zip", type=Path, default=None, metavar="FILE",
                        help="use this img_align_celeba.zip (downloaded in a browser) instead of downloading")
    args = parser.parse_args(argv)
    out = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; OUT_DIR must be a folder")
    if args.zip:
        archive = args.zip
        if not archive.is_file():
            raise UserError(f"--zip {archive} does not exist")
        fetched = False
    else:
        archive = out / "img_align_celeba.zip"
        fetched = not archive.exists()  # a zip already there is the user's: checked, never deleted
        download(URL, archive, None)
    actual = md5_of(archive)
    if actual != MD5:
        if fetched:
            archive.unlink()
            raise UserError(f"the download has MD5 {actual}, expected {MD5} (Google Drive may have sent a "
                            "'quota exceeded' page) and was discarded; download img_align_celeba.zip in a browser "
                            "and pass --zip FILE")
        raise UserError(f"{archive} has MD5 {actual}, expected {MD5}; it is not the official "
                        "img_align_celeba.zip (it was left as it is)")
    print(f"checksum ok (MD5 {MD5}, SHA-256 {sha256_of(archive)})")
    if not zipfile.is_zipfile(archive):
        raise UserError(f"{archive} is not a zip archive")
    count = safe_extract(archive, out)
    folder = out / "img_align_celeba"
    print(f"unpacked {count} images into {folder}")
    print(f"done: train with  python chapters/srgan/main.py --data {folder} --hr-size 128")


if __name__ == "__main__":
    main_guard(main)
