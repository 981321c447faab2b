"""Downloads that are never half-used: a `.part` file, SHA-256 checked, then renamed into place."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from common.errors import UserError


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: str | os.PathLike, sha256: str | None, overwrite: bool = True) -> Path:
    """Fetches `url` to `destination` unless a verified copy is already there.

    The bytes go to `<destination>.part` first; only a file whose SHA-256 matches is renamed into place, so an
    interrupted or corrupted download is never used (the next run starts it again). A file already at
    `destination` whose checksum does not match is replaced by the fresh download only when `overwrite` is
    true (the fetch scripts pass their --overwrite flag; otherwise that file is left alone and a UserError says
    so). With `sha256=None` an existing file is always kept.
    """
    destination = Path(destination)
    if destination.is_dir():
        raise UserError(f"{destination} is a folder, not a file name to download to")
    if destination.exists():
        actual = None if sha256 is None else sha256_of(destination)
        if actual == sha256:
            print(f"{destination} is already here" + (" (checksum ok)" if sha256 else ""))
            return destination
        if not overwrite:
            raise UserError(f"{destination} already exists but is not the expected file (SHA-256 {actual}, "
                            f"expected {sha256}); move it away or pass --overwrite to replace it")
        print(f"{destination} has SHA-256 {actual}, expected {sha256}: replacing it with a fresh download")
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    print(f"downloading {url} -> {destination}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except OSError as error:
        part.unlink(missing_ok=True)
        raise UserError(f"could not download {url} ({error}); check your internet connection and run again") from None
    actual = sha256_of(part)
    if sha256 is not None and actual != sha256:
        part.unlink()
        raise UserError(f"{url} arrived with SHA-256 {actual}, expected {sha256}; the file was discarded, "
                        "run again (or the source has changed)")
    os.replace(part, destination)
    return destination


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extracts a .tar(.gz) or .zip into `target`, refusing anything that could land outside it.

    Refused before a single file is written: absolute paths, `..` components, symbolic and hard links, device
    files and FIFOs (for tar the check is tarfile's own "data" filter, applied to every member up front).
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                mode = info.external_attr >> 16
                name = info.filename
                inside = (root / name).resolve()
                if name.startswith(("/", "\\")) or ".." in Path(name).parts or not inside.is_relative_to(root):
                    raise UserError(f"{archive}: member {name!r} would be written outside {target}; refusing to extract")
                if mode and (mode & 0o170000) not in (0o100000, 0o040000, 0):
                    raise UserError(f"{archive}: member {name!r} is a link or special file; refusing to extract")
            zipped.extractall(target)
        return target
    try:
        tar = tarfile.open(archive)
    except (tarfile.TarError, OSError) as error:
        raise UserError(f"{archive} is neither a zip nor a tar archive ({error})") from None
    with tar:
        members = tar.getmembers()
        for member in members:
            if member.name.startswith(("/", "\\")) or ".." in Path(member.name).parts:
                raise UserError(f"{archive}: member {member.name!r} would be written outside {target}; "
                                "refusing to extract")
            try:
                tarfile.data_filter(member, str(root))
            except tarfile.FilterError as error:
                raise UserError(f"{archive}: member {member.name!r} refused ({error}); refusing to extract") from None
            if member.islnk() or member.issym():
                raise UserError(f"{archive}: member {member.name!r} is a link; refusing to extract")
        tar.extractall(target, members=members, filter="data")
    return target


def refuse_to_overwrite(path: str | os.PathLike, overwrite: bool) -> Path:
    """The output file `path` given by the user, or a UserError if it is there already and `overwrite` is false.

    A folder is never an acceptable output file, --overwrite or not.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the name of the file to write")
    if os.path.lexists(path) and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it, or choose another name")
    return path


def main_guard(function) -> None:
    """Runs a fetch script's main: user errors become one line and exit code 2."""
    try:
        function()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
