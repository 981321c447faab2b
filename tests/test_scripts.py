"""The command-line scripts under datasets/ and tools/: --help explains every argument and writes nothing, a
wrong argument is a one-line argparse error (exit 2), no script replaces a file the user did not ask to
replace, the fetch scripts work offline on local sources, and tools/preview_procedural.py draws a real sheet."""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
_MAIN = re.compile(r"""^if __name__ == ["']__main__["']:""", re.MULTILINE)
SCRIPTS = sorted(p for folder in ("datasets", "tools") for p in (ROOT / folder).glob("*.py")
                 if _MAIN.search(p.read_text()))
IDS = [str(p.relative_to(ROOT)) for p in SCRIPTS]
PREVIEW = ROOT / "tools" / "preview_procedural.py"
TINY_PREVIEW = ["--faces", "4", "--identities", "2", "--shapes", "2", "--sizes", "32", "--face-size", "32"]


def run(script: Path, *args, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS` in a fresh process, from `cwd` (conftest.py has put KERAS_HOME etc. in os.environ)."""
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, env=os.environ,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The stderr of a refused run: exit code 2, no traceback, a single `error: ...` line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def arguments(script: Path) -> list[tuple[list[str], str | None, str | None]]:
    """(option strings, metavar, constant help text or None) for every add_argument call in the script."""
    found = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            names = [a.value for a in node.args if isinstance(a, ast.Constant)]
            keywords = {k.arg: k.value for k in node.keywords}
            assert "help" in keywords, f"{script.name}: add_argument{tuple(names)} has no help="
            helptext = keywords["help"].value if isinstance(keywords["help"], ast.Constant) else None
            assert helptext is None or helptext.strip(), f"{script.name}: {names} has an empty help"
            metavar = keywords.get("metavar")
            found.append((names, metavar.value if isinstance(metavar, ast.Constant) else None, helptext))
    return found


def test_every_known_script_is_found():
    expected = {"datasets/fetch_celeba.py", "datasets/fetch_mnist.py", "datasets/fetch_shapenet.py",
                "datasets/fetch_wiki.py", "datasets/prepare_anime.py", "datasets/procedural_voxels.py",
                "datasets/train_mnist_classifier.py", "tools/convert_face_api.py", "tools/preview_procedural.py"}
    assert expected <= set(IDS), set(IDS)


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_help_explains_every_argument_and_writes_nothing(script, tmp_path):
    result = run(script, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [], "--help created files or folders"
    out = result.stdout
    assert out.startswith("usage:")
    squeezed = re.sub(r"\s+", "", out)  # argparse re-wraps help text: compare without whitespace
    specs = arguments(script)
    assert specs, f"{script.name} has a __main__ but no argparse arguments"
    for names, metavar, helptext in specs:
        for name in names:  # every option string ("--out"), or a positional's metavar / name
            shown = name if name.startswith("-") else (metavar or name)
            assert re.search(rf"(?<![\w-]){re.escape(shown)}(?![\w-])", out), f"{shown} missing from --help"
        if helptext:
            assert re.sub(r"\s+", "", helptext.split("%(")[0]) in squeezed, f"help of {names} not shown"


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_an_unknown_flag_is_an_argparse_error_that_writes_nothing(script, tmp_path):
    result = run(script, "--no-such-flag", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.startswith("usage:"), result.stderr
    assert re.search(r"error: (unrecognized arguments: --no-such-flag|the following arguments are required)",
                     result.stderr), result.stderr
    assert list(tmp_path.iterdir()) == []


# --- tools/preview_procedural.py -----------------------------------------------------------------------------

def test_preview_draws_a_sheet_and_never_replaces_an_existing_file_unasked(tmp_path):
    from PIL import Image

    out = tmp_path / "sheet" / "preview.png"
    first = run(PREVIEW, out, *TINY_PREVIEW, cwd=tmp_path, timeout=20)
    assert first.returncode == 0, first.stderr
    with Image.open(out) as image:
        assert image.format == "PNG"
        picture = np.asarray(image.convert("RGB"))
    height, width, _ = picture.shape
    assert height > 300 and width > 200
    colours = np.unique(picture.reshape(-1, 3), axis=0)
    assert len(colours) > 200, f"only {len(colours)} colours: the sheet is (nearly) blank"
    assert picture.std() > 30
    assert sorted(p.name for p in out.parent.iterdir()) == ["preview.png"]  # no temporary file left

    before, mtime = out.read_bytes(), out.stat().st_mtime_ns
    again = run(PREVIEW, out, *TINY_PREVIEW, "--seed", "1", cwd=tmp_path, timeout=20)
    assert "--overwrite" in one_line_error(again)
    assert out.read_bytes() == before and out.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.parent.iterdir()) == ["preview.png"]

    replaced = run(PREVIEW, out, *TINY_PREVIEW, "--seed", "1", "--overwrite", cwd=tmp_path, timeout=20)
    assert replaced.returncode == 0, replaced.stderr
    assert out.read_bytes() != before  # another seed draws other faces and shapes


def test_preview_refuses_a_folder_and_an_empty_sheet(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    assert "folder" in one_line_error(run(PREVIEW, folder, *TINY_PREVIEW, "--overwrite", cwd=tmp_path))
    empty = run(PREVIEW, tmp_path / "x.png", "--faces", "0", "--identities", "0", "--shapes", "0", cwd=tmp_path)
    assert empty.returncode == 2 and "nothing to draw" in empty.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"] and not any(folder.iterdir())


def test_preview_voxel_views_put_z_up_as_procedural_voxels_defines_it():
    spec = importlib.util.spec_from_file_location("preview_procedural", PREVIEW)
    preview = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preview)
    size = 8
    vox = np.zeros((size, size, size), np.uint8)
    vox[2, 3, size - 1] = 1  # one voxel at the very top (z is up), x=2, y=3
    front, side, top = preview.voxel_views(vox)[..., 0]
    assert front[0, 3] > 0 and np.count_nonzero(front) == 1  # top row, column y
    assert side[0, 2] > 0 and np.count_nonzero(side) == 1  # top row, column x
    assert top[2, 3] == top.max() == 1.0  # seen from above it is the nearest possible voxel
    from datasets.procedural_voxels import make_shape

    chair = make_shape("chair", 0, size=32)
    front = preview.voxel_views(chair)[0, ..., 0]
    # A chair stands on the floor (z = 0): its legs reach the bottom row of the front view, the top row is empty.
    assert front[-2:].any() and not front[0].any()


# --- files the user already has ------------------------------------------------------------------------------

def _unchanged(path: Path, data: bytes) -> None:
    assert path.read_bytes() == data
    assert not list(path.parent.glob("*.part"))


def test_procedural_voxels_out_is_not_replaced_unasked(tmp_path):
    out = tmp_path / "mine.png"
    out.write_bytes(b"my own picture")
    result = run(ROOT / "datasets" / "procedural_voxels.py", "chair", "32", "--num", "2", "--out", out, cwd=tmp_path)
    assert "--overwrite" in one_line_error(result)
    _unchanged(out, b"my own picture")
    result = run(ROOT / "datasets" / "procedural_voxels.py", "chair", "32", "--num", "2", "--out", out,
                 "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_mnist_classifier_refuses_an_existing_out_before_training(tmp_path):
    script = ROOT / "datasets" / "train_mnist_classifier.py"
    out = tmp_path / "mine.keras"
    out.write_bytes(b"my own model")
    # --epochs 1: were the refusal missing, the file would be replaced within the timeout and the test would fail.
    assert "--overwrite" in one_line_error(run(script, "--out", out, "--epochs", "1", cwd=tmp_path))
    _unchanged(out, b"my own model")
    shipped = ROOT / "datasets" / "mnist_classifier.keras"  # the default --out
    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert "--overwrite" in one_line_error(run(script, cwd=tmp_path, timeout=30))
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == digest
    assert list(tmp_path.iterdir()) == [out]


def test_train_age_classifier_refuses_an_existing_out_or_report_before_training(tmp_path):
    script = ROOT / "chapters" / "age_cgan" / "train_age_classifier.py"
    out = tmp_path / "mine.keras"
    out.write_bytes(b"my own model")
    assert "--overwrite" in one_line_error(run(script, "--out", out, "--faces", "64", "--epochs", "1", cwd=tmp_path))
    _unchanged(out, b"my own model")
    out.unlink()
    report = tmp_path / "mine.json"  # the report written beside the model is a user's file too
    report.write_bytes(b"my notes")
    assert "--overwrite" in one_line_error(run(script, "--out", out, "--faces", "64", "--epochs", "1", cwd=tmp_path))
    _unchanged(report, b"my notes")
    shipped = ROOT / "chapters" / "age_cgan" / "weights" / "age_classifier.keras"  # the default --out
    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert "--overwrite" in one_line_error(run(script, cwd=tmp_path, timeout=30))
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == digest
    assert list(tmp_path.iterdir()) == [report]


def test_prepare_anime_refuses_an_out_folder_that_holds_files(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    out.mkdir()
    (out / "a.png").write_bytes(b"my own crop")
    result = run(ROOT / "datasets" / "prepare_anime.py", raw, out, cwd=tmp_path)
    assert "--overwrite" in one_line_error(result)
    _unchanged(out / "a.png", b"my own crop")


def test_convert_face_api_keeps_existing_archives_unless_asked(tmp_path):
    script = ROOT / "tools" / "convert_face_api.py"
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for model in ("face_recognition_model", "age_gender_model"):
        (src / f"{model}-weights_manifest.json").write_text("[]")  # a valid manifest with no tensors
    (out / "face_recognition.npz").write_bytes(b"shipped weights")
    assert "--overwrite" in one_line_error(run(script, src, out, cwd=tmp_path))
    _unchanged(out / "face_recognition.npz", b"shipped weights")
    assert sorted(p.name for p in out.iterdir()) == ["face_recognition.npz"]
    result = run(script, src, out, "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("face_recognition.npz", "age_gender.npz"):
        with np.load(out / name) as archive:
            assert "@vladmandic/face-api" in str(archive["__source__"])
    fixture = run(script, src, out, "--overwrite", "--fixture", tmp_path / "f.npz", cwd=tmp_path)
    assert fixture.returncode == 2 and "--node-modules" in fixture.stderr


# --- fetch scripts, offline ----------------------------------------------------------------------------------

def test_fetch_mnist_keeps_a_foreign_file_at_out(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "mnist.npz").write_bytes(b"not mnist")
    # OUT is a folder: the script checks OUT/mnist.npz, finds a file that is not MNIST, and stops before any download.
    result = run(ROOT / "datasets" / "fetch_mnist.py", folder, cwd=tmp_path)
    message = one_line_error(result)
    assert "not the expected file" in message and "--overwrite" in message
    _unchanged(folder / "mnist.npz", b"not mnist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize("name", ["fetch_shapenet.py", "fetch_wiki.py", "fetch_celeba.py"])
def test_fetch_scripts_refuse_a_file_as_their_folder(tmp_path, name):
    target = tmp_path / "a_file"
    target.write_bytes(b"mine")
    assert "must be a folder" in one_line_error(run(ROOT / "datasets" / name, target, cwd=tmp_path))
    _unchanged(target, b"mine")
    assert list(tmp_path.iterdir()) == [target]


def test_fetch_celeba_keeps_an_archive_it_did_not_download(tmp_path):
    out = tmp_path / "celeba"
    out.mkdir()
    archive = out / "img_align_celeba.zip"
    archive.write_bytes(b"a partial zip the user put here")
    result = run(ROOT / "datasets" / "fetch_celeba.py", out, cwd=tmp_path)
    assert "MD5" in one_line_error(result)
    _unchanged(archive, b"a partial zip the user put here")
    assert list(out.iterdir()) == [archive]


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def test_fetch_mnist_downloads_verifies_and_replaces_only_with_overwrite(tmp_path, monkeypatch, capsys):
    from datasets import fetch_mnist

    source = tmp_path / "source.npz"
    source.write_bytes(b"digits" * 500)
    monkeypatch.setattr(fetch_mnist, "URL", source.as_uri())  # a local file: the real download code, no network
    monkeypatch.setattr(fetch_mnist, "SHA256", hashlib.sha256(source.read_bytes()).hexdigest())
    out = tmp_path / "out" / "mnist.npz"
    fetch_mnist.main([str(out)])
    assert out.read_bytes() == source.read_bytes()
    fetch_mnist.main([str(out.parent)])  # a folder means OUT/mnist.npz: already here, checksum ok
    assert "already here" in capsys.readouterr().out
    out.write_bytes(b"edited by the user")
    with pytest.raises(UserError, match="--overwrite"):
        fetch_mnist.main([str(out)])
    assert out.read_bytes() == b"edited by the user"
    fetch_mnist.main([str(out), "--overwrite"])
    assert out.read_bytes() == source.read_bytes() and not list(out.parent.glob("*.part"))


def test_fetch_shapenet_downloads_and_extracts_only_volumetric_data(tmp_path, monkeypatch):
    from datasets import fetch_shapenet

    source = _zip(tmp_path / "3DShapeNetsCode.zip", {
        "3DShapeNets/volumetric_data/chair/30/train/chair_1.mat": b"mat",
        "3DShapeNets/volumetric_data/chair/30/test/chair_2.mat": b"mat",
        "3DShapeNets/README": b"code, not needed"})
    monkeypatch.setattr(fetch_shapenet, "URL", source.as_uri())
    out = tmp_path / "out"
    fetch_shapenet.main([str(out)])
    chair = out / "3DShapeNets" / "volumetric_data" / "chair" / "30"
    assert (chair / "train" / "chair_1.mat").read_bytes() == b"mat" and (chair / "test" / "chair_2.mat").exists()
    assert not (out / "3DShapeNets" / "README").exists()
    assert (out / "3DShapeNetsCode.zip").read_bytes() == source.read_bytes()


def test_fetch_wiki_downloads_and_extracts_wiki_crop(tmp_path, monkeypatch):
    from datasets import fetch_wiki

    source = tmp_path / "wiki_crop.tar"
    with tarfile.open(source, "w") as tar:
        for name, data in {"wiki_crop/wiki.mat": b"mat", "wiki_crop/00/1_1950-01-01_1980.jpg": b"jpg"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(fetch_wiki, "URL", source.as_uri())
    out = tmp_path / "out"
    fetch_wiki.main([str(out)])
    assert (out / "wiki_crop" / "wiki.mat").read_bytes() == b"mat"
    assert (out / "wiki_crop" / "00" / "1_1950-01-01_1980.jpg").read_bytes() == b"jpg"


def test_fetch_celeba_checks_a_given_zip_and_unpacks_only_images(tmp_path, monkeypatch):
    from datasets import fetch_celeba

    archive = _zip(tmp_path / "mine.zip", {"img_align_celeba/000001.jpg": b"jpeg", "img_align_celeba/notes.txt": b"x"})
    out = tmp_path / "celeba"
    with pytest.raises(UserError, match="MD5"):
        fetch_celeba.main([str(out), "--zip", str(archive)])
    assert archive.exists() and not (out / "img_align_celeba").exists()
    monkeypatch.setattr(fetch_celeba, "MD5", fetch_celeba.md5_of(archive))
    fetch_celeba.main([str(out), "--zip", str(archive)])
    assert [p.name for p in (out / "img_align_celeba").iterdir()] == ["000001.jpg"]
    assert archive.exists()
