"""Downloads that are never half-used: a `.part` file, SHA-256 checked, then renamed into place."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.request
from pathlib import Path

from common.errors import UserError


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: str | os.PathLike, sha256: str | None) -> Path:
    """Fetches `url` to `destination` unless a verified copy is already there.

    The bytes go to `<destination>.part` first; only a file whose SHA-256 matches is renamed into place, so an
    interrupted or corrupted download is never used (the next run starts it again).
    """
    destination = Path(destination)
    if destination.exists() and (sha256 is None or sha256_of(destination) == sha256):
        print(f"{destination} is already here (checksum ok)")
        return destination
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


def main_guard(function) -> None:
    """Runs a fetch script's main: user errors become one line and exit code 2."""
    try:
        function()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
