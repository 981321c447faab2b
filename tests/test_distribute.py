"""tf.distribute: MirroredStrategy over two logical CPUs trains like one device at the same global batch."""
from __future__ import annotations

import json

import pytest

from conftest import run_script


def test_mirrored_strategy_over_two_cpus_matches_a_single_device(tmp_path):
    result = run_script("tests/mirrored_vs_single.py", tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    assert runs["mirrored"]["replicas"] == 2 and runs["single"]["replicas"] == 1
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert runs["mirrored"]["logs"][key] == pytest.approx(runs["single"]["logs"][key], rel=1e-3, abs=1e-4)
    assert runs["mirrored"]["generator_abs_sum"] == pytest.approx(runs["single"]["generator_abs_sum"], rel=1e-4)
    assert (tmp_path / "mirrored" / "checkpoints" / "ckpt-1.index").exists()
