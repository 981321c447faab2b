"""Fetch scripts never use a partial or corrupted download."""
from __future__ import annotations

import hashlib

import pytest

from common.errors import UserError
from datasets.download import download


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
