"""The book's anime-face preprocessing: crop the first detected face of every image, resize, save PNGs.

  python datasets/prepare_anime.py RAW_FOLDER OUT_FOLDER [--size 64] [--overwrite]

RAW_FOLDER is searched recursively for images (PNG, JPEG, BMP, GIF). Faces are found with the `animeface`
package (python-animeface, a wrapper of the AnimeFace 2009 detector):

  pip install animeface

Wheels exist for Linux and ARM macOS on recent Pythons; elsewhere pip builds it from source, which needs the
libnvxs C library first (its source ships in the python-animeface repository: third_party/nvxs-1.0.2,
`./configure && make && sudo make install`). Images without a detected face are counted and skipped, as in
the book. OUT_FOLDER must be new or empty: crops are named after the raw files, so writing into a folder
that already holds files could replace them; --overwrite allows it.
Then train with `python chapters/anime_dcgan/main.py --data OUT_FOLDER --image-size 64`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a plain checkout too

from common.errors import UserError  # noqa: E402

INSTALL = ("the face detector needs the `animeface` package: pip install animeface "
           "(see python datasets/prepare_anime.py --help if pip has to build it)")


def load_detector() -> Callable:
    """animeface.detect, or a UserError saying how to install it."""
    try:
        import animeface
    except ImportError:
        raise UserError(INSTALL) from None
    return animeface.detect


def crop_faces(raw: Path, out: Path, size: int = 64, detect: Callable | None = None,
               log: Callable[[str], None] = print) -> dict[str, int]:
    """Crops the first face of each image in `raw` into `out`/<name>.png; returns counts."""
    from PIL import Image

    from common.data.images import find_images, usable_images

    detect = detect or load_detector()
    paths = usable_images(find_images(raw, flag="RAW"), log, flag="RAW")
    out.mkdir(parents=True, exist_ok=True)
    counts = {"images": len(paths), "saved": 0, "no_face": 0, "unreadable": 0}
    for index, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                faces = detect(image)
                if not faces:
                    counts["no_face"] += 1
                    continue
                box = faces[0].face.pos
                face = image.crop((box.x, box.y, box.x + box.width, box.y + box.height))
                name = "_".join(path.relative_to(raw).with_suffix("").parts)
                face.resize((size, size), Image.LANCZOS).save(out / f"{name}.png")
                counts["saved"] += 1
        except (OSError, ValueError) as error:
            counts["unreadable"] += 1
            log(f"skipped {path.name}: {error}")
        if (index + 1) % 1000 == 0:
            log(f"{index + 1}/{len(paths)} images, {counts['saved']} faces")
    log(f"{counts['saved']} faces of {size}x{size} written to {out}; {counts['no_face']} of {counts['images']} "
        f"images had no detected face" + (f", {counts['unreadable']} could not be read" if counts["unreadable"] else ""))
    if not counts["saved"]:
        raise UserError(f"no face was found in any of the {counts['images']} images in {raw}")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python datasets/prepare_anime.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path, metavar="RAW_FOLDER", help="folder of raw images (searched recursively)")
    parser.add_argument("out", type=Path, metavar="OUT_FOLDER",
                        help="new or empty folder to write the cropped faces into, as PNG")
    parser.add_argument("--size", type=int, default=64, help="side of the saved faces in pixels (the book: 64)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into OUT_FOLDER even if it already holds files (same-named crops are replaced)")
    args = parser.parse_args(argv)
    try:
        if args.size < 8:
            raise UserError(f"--size must be at least 8, got {args.size}")
        if args.out.exists() and not args.out.is_dir():
            raise UserError(f"{args.out} is a file; OUT_FOLDER must be a folder")
        if args.out.is_dir() and any(args.out.iterdir()) and not args.overwrite:
            raise UserError(f"{args.out} already holds files; choose a new folder or pass --overwrite "
                            "to write into it")
        detect = load_detector()  # before scanning a large folder
        crop_faces(args.raw, args.out, args.size, detect)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
