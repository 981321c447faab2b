"""Fetch scripts never use a partial or corrupted download."""
from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile

import pytest

from common.errors import UserError
from datasets.download import download, safe_extract


def test_a_verified_download_lands_and_a_corrupt_one_is_discarded(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"digits" * 1000)
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "out" / "mnist.npz"
    with pytest.raises(UserError, match="expected 0000"):
        download(source.as_uri(), target, "0" * 64)
    assert not target.exists() and not list(target.parent.glob("*.part"))
    assert download(source.as_uri(), target, good).read_bytes() == source.read_bytes()


def test_an_interrupted_download_leaves_nothing_usable(tmp_path):
    target = tmp_path / "mnist.npz"
    with pytest.raises(UserError, match="could not download"):
        download((tmp_path / "missing").as_uri(), target, "0" * 64)
    assert not target.exists() and not (tmp_path / "mnist.npz.part").exists()


def _tar_with(path, name, kind=tarfile.REGTYPE, linkname=""):
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("data/ok.txt")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        evil = tarfile.TarInfo(name)
        evil.type, evil.linkname = kind, linkname
        evil.size = 4 if kind == tarfile.REGTYPE else 0
        tar.addfile(evil, io.BytesIO(b"evil") if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize("name,kind,linkname", [
    ("/etc/evil", tarfile.REGTYPE, ""),
    ("../evil", tarfile.REGTYPE, ""),
    ("data/../../evil", tarfile.REGTYPE, ""),
    ("data/link", tarfile.SYMTYPE, "/etc/passwd"),
    ("data/hard", tarfile.LNKTYPE, "data/ok.txt"),
    ("data/dev", tarfile.CHRTYPE, ""),
])
def test_malicious_tar_members_are_refused_before_anything_is_written(tmp_path, name, kind, linkname):
    archive = _tar_with(tmp_path / "evil.tar.gz", name, kind, linkname)
    target = tmp_path / "out"
    with pytest.raises(UserError, match="refus"):
        safe_extract(archive, target)
    assert not (target / "data" / "ok.txt").exists() and not (tmp_path / "evil").exists()


def test_malicious_zip_members_are_refused_and_a_clean_archive_extracts(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("ok.txt", "ok")
        zipped.writestr("../escape.txt", "evil")
    with pytest.raises(UserError, match="outside"):
        safe_extract(evil, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "ok.txt").exists()
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zipped:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zipped.writestr(info, "/etc/passwd")
    with pytest.raises(UserError, match="link"):
        safe_extract(link, tmp_path / "out2")
    clean = _tar_with(tmp_path / "clean.tar.gz", "data/also_ok.txt")
    out = safe_extract(clean, tmp_path / "out3")
    assert (out / "data" / "ok.txt").read_text() == "ok" and (out / "data" / "also_ok.txt").read_text() == "evil"
