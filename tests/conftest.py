"""Test setup: CPU only, a private Keras/matplotlib home, deterministic ops, and tiny training runs."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="gan-cookbook-tests-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)  # every test's processes have ended by then
# Importing TensorFlow or matplotlib writes into ~/.keras and ~/.cache: keep them in a temporary home.
os.environ.update({
    "KERAS_HOME": os.path.join(_HOME, "keras"),
    "MPLCONFIGDIR": os.path.join(_HOME, "matplotlib"),
    "XDG_CACHE_HOME": os.path.join(_HOME, "cache"),
    "CUDA_VISIBLE_DEVICES": "",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_DETERMINISTIC_OPS": "1",
    "MPLBACKEND": "Agg",
})
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one of several workers sharing the cores: TensorFlow's spinning thread pool would fight the other worker for
    # them (its ops still run in parallel with one another: the inter-op pool is left alone)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, timeout: float = 300, env: dict | None = None,
               check: bool = False) -> subprocess.CompletedProcess:
    """Runs a chapter's main.py (or any script under the repo) in a fresh Python process."""
    result = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{script} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def train_mirrored(out: Path, names: tuple[str, ...]) -> None:
    """tests/mirrored_every_chapter.py for the stages `names` into `out`: each must exit 0 with two replicas."""
    import json

    result = run_script("tests/mirrored_every_chapter.py", out, ",".join(names), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(runs) == set(names)
    for name, outcome in runs.items():
        assert outcome == {"code": 0, "replicas": [2]}, (name, outcome, result.stderr[-3000:])


def run_main(main, argv: list[str]) -> int:
    """Runs a chapter's main(argv) in this process the way `common.cli.run_main` does; returns the exit code."""
    from common.cli import run_main as cli_run_main

    with pytest.raises(SystemExit) as exit_info:
        cli_run_main(main, [str(a) for a in argv])
    return exit_info.value.code


TINY_VANILLA = ["--epochs", "2", "--steps-per-epoch", "4", "--batch-size", "16"]


@pytest.fixture(scope="session")
def vanilla_run(tmp_path_factory) -> Path:
    """One tiny vanilla-GAN run shared by the tests that only read a finished run."""
    from chapters.vanilla_gan.main import main

    run_dir = tmp_path_factory.mktemp("vanilla") / "run"
    assert run_main(main, [*TINY_VANILLA, "--run-dir", run_dir]) == 0
    return run_dir


@pytest.fixture(autouse=True)
def _seeded():
    """Op determinism (TF_DETERMINISTIC_OPS) needs every random op seeded: seed each test. A chapter's main sets
    the process-wide dtype policy (--precision): the next test starts in float32 again."""
    import keras

    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")
