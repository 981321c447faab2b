"""Fetches 3DShapeNetsCode.zip (Wu et al. 2015) for the 3D-GAN chapter and unpacks its volumetric_data.

    python datasets/fetch_shapenet.py [OUT_DIR]          # default: datasets/3DShapeNets
    python chapters/gan_3d/main.py --data datasets/3DShapeNets/3DShapeNets/volumetric_data --category chair

The archive (about 1 GB with the code and models of the original paper) holds, under volumetric_data/,
one folder per ModelNet category with 30/train/*.mat and 30/test/*.mat (key `instance`, 30³ voxels).
Extraction refuses any member that would land outside OUT_DIR (absolute paths, `..`, links). An archive
already at OUT_DIR/3DShapeNetsCode.zip is used as it is (never replaced).
"""
from __future__ import annotations

import argparse
import stat
import sys
import zipfile
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import UserError  # noqa: E402
from datasets.download import download, main_guard  # noqa: E402

URL = "http://3dshapenets.cs.princeton.edu/3DShapeNetsCode.zip"
SHA256 = None  # the site publishes no checksum; the zip's own CRCs are checked while extracting


def safe_extract(archive: str | Path, destination: str | Path, only: str | None = None) -> int:
    """Extracts `archive` into `destination` (only members whose path contains `only`, when given).

    Returns the number of files written. Raises UserError, before writing anything, if a member is absolute,
    climbs out with `..`, or is a symbolic link.
    """
    destination = Path(destination).resolve()
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if only is None or only in m.filename]
            for member in members:
                target = (destination / member.filename).resolve()
                mode = member.external_attr >> 16
                if member.filename.startswith(("/", "\\")) or ".." in Path(member.filename).parts or \
                        not target.is_relative_to(destination) or stat.S_ISLNK(mode):
                    raise UserError(f"{archive} contains an unsafe member {member.filename!r} (outside the target "
                                    "folder or a link); nothing was extracted")
            written = 0
            for member in members:
                bundle.extract(member, destination)
                written += not member.is_dir()
    except zipfile.BadZipFile as error:
        raise UserError(f"{archive} is not a valid zip file ({error}); delete it and run again") from None
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python datasets/fetch_shapenet.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).resolve().parent / "3DShapeNets",
                        metavar="OUT_DIR", help="folder to download and unpack into (default: %(default)s)")
    out = parser.parse_args(argv).out
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; OUT_DIR must be a folder")
    archive = download(URL, out / "3DShapeNetsCode.zip", SHA256)
    count = safe_extract(archive, out, only="volumetric_data/")
    found = sorted(out.rglob("volumetric_data"))
    if not found:
        raise UserError(f"{archive} has no volumetric_data folder; is it the 3DShapeNets code archive?")
    print(f"extracted {count} files; train with  python chapters/gan_3d/main.py --data {found[0]} --category chair")


if __name__ == "__main__":
    main_guard(main)
