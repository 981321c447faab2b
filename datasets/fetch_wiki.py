"""Fetches and extracts IMDB-WIKI's `wiki_crop` (62,328 face crops + wiki.mat, 811 MB) for the Age-cGAN chapter.

    python datasets/fetch_wiki.py [OUT_DIR]          # default: datasets/ -> datasets/wiki_crop/
    python chapters/age_cgan/main.py --stage gan --data datasets/wiki_crop

Source: Rothe, Timofte, Van Gool, "DEX: Deep EXpectation of apparent age from a single image" (ETH Zurich);
for research use only - read the licence terms on https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/.
The server publishes no checksum, so the archive is checked by its structure instead: extraction refuses any
member that is not a plain file or folder or whose path would land outside OUT_DIR (absolute paths, `..`,
links), and the result must hold wiki_crop/wiki.mat. Nothing is fetched when OUT_DIR/wiki_crop/wiki.mat is
already there; an archive already at OUT_DIR/wiki_crop.tar is used as it is (never replaced).
"""
from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import UserError  # noqa: E402
from datasets.download import download, main_guard  # noqa: E402

URL = "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/static/wiki_crop.tar"
SHA256 = None  # not published by the source; see the module docstring


def safe_extract(archive: str | Path, target: str | Path) -> int:
    """Extracts a tar archive into `target`, refusing anything that could write outside it. Returns file count."""
    target = Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                dest = (target / member.name).resolve()
                if member.name.startswith(("/", "\\")) or Path(member.name).is_absolute() or \
                        (dest != target and target not in dest.parents):
                    raise UserError(f"{archive} holds {member.name!r}, which would land outside {target}; "
                                    "nothing was extracted from it")
                if not (member.isfile() or member.isdir()):
                    raise UserError(f"{archive} holds {member.name!r}, a link or device rather than a file; "
                                    "nothing was extracted from it")
            for member in members:
                tar.extract(member, target, filter="data")  # the stdlib's own guard as well (Python 3.11.4+)
                count += member.isfile()
    except tarfile.TarError as error:
        raise UserError(f"{archive} is not a readable tar archive ({error}); delete it and run again") from None
    return count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python datasets/fetch_wiki.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).resolve().parent, metavar="OUT_DIR",
                        help="folder to download into; wiki_crop/ is extracted inside it (default: %(default)s)")
    out = parser.parse_args(argv).out
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; OUT_DIR must be a folder")
    mat = out / "wiki_crop" / "wiki.mat"
    if mat.exists():
        print(f"{mat} is already here")
    else:
        archive = download(URL, out / "wiki_crop.tar", SHA256)
        files = safe_extract(archive, out)
        if not mat.exists():
            raise UserError(f"{archive} extracted {files} files but no wiki_crop/wiki.mat")
        print(f"extracted {files} files to {out / 'wiki_crop'}; you may delete {archive}")
    print(f"done: train with  python chapters/age_cgan/main.py --stage gan --data {out / 'wiki_crop'}")


if __name__ == "__main__":
    main_guard(main)
