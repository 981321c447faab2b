"""tf.distribute: MirroredStrategy over two logical CPUs trains like one device at the same global batch."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, run_script


def test_a_reproducible_cpu_run_takes_one_op_at_a_time_without_graph_rewrites():
    """What the 3D-GAN's bit-for-bit runs rest on (its killed run is compared with an unbroken one in
    test_killed_runs); a fresh process, because the threads are fixed when TensorFlow starts."""
    code = ("import json, tensorflow as tf; from common.devices import setup_devices; "
            "setup_devices('one', 'float32', 0, log=lambda _: None, reproducible_on_cpu={}); "
            "print(json.dumps([tf.config.threading.get_inter_op_parallelism_threads(), "
            "tf.config.optimizer.get_experimental_options().get('disable_meta_optimizer', False)]))")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    for asked, expected in ((True, [1, True]), (False, [0, False])):
        result = subprocess.run([sys.executable, "-c", code.format(asked)], capture_output=True, text=True,
                                cwd=ROOT, env=env, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_mirrored_strategy_over_two_cpus_matches_a_single_device(tmp_path):
    result = run_script("tests/mirrored_vs_single.py", tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    assert runs["mirrored"]["replicas"] == 2 and runs["single"]["replicas"] == 1
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert runs["mirrored"]["logs"][key] == pytest.approx(runs["single"]["logs"][key], rel=1e-3, abs=1e-4)
    assert runs["mirrored"]["generator_abs_sum"] == pytest.approx(runs["single"]["generator_abs_sum"], rel=1e-4)
    assert (tmp_path / "mirrored" / "checkpoints" / "ckpt-1.index").exists()


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# gan_3d at its default width and a global batch of 32 (16 a worker): TF's CPU Conv3D is slow at smaller batches
MULTIWORKER = {"vanilla_gan": ["--batch-size", "16"],
               "gan_3d": ["--batch-size", "32", "--cube-len", "32", "--num-shapes", "32", "--grid", "4"]}


@pytest.mark.parametrize("chapter", MULTIWORKER)
def test_two_multiworker_processes_on_localhost_train_together_and_only_the_chief_writes(chapter, tmp_path):
    """MultiWorkerMirroredStrategy with TF_CONFIG: two workers on 127.0.0.1 train 3 steps and both exit."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    scratch = tmp_path / "tmp"  # the workers' temporary files (worker 1 saves its share of a checkpoint there)
    scratch.mkdir()
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "TMPDIR": str(scratch)}
        argv = [sys.executable, str(ROOT / f"chapters/{chapter}/main.py"), "--strategy", "multiworker",
                "--epochs", "1", "--steps-per-epoch", "3", *MULTIWORKER[chapter], "--run-dir", str(tmp_path / f"w{index}")]
        workers.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True))
    try:
        outputs = [worker.communicate(timeout=420)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    assert (tmp_path / "w0" / "checkpoints" / "ckpt-1.index").exists()  # worker 0 is the chief
    assert (tmp_path / "w0" / "models" / "generator.keras").exists()
    assert not list((tmp_path / "w1").glob("checkpoints/ckpt-*")) and not list((tmp_path / "w1").glob("samples/*.png"))
    assert not list(scratch.glob("worker-ckpt-*"))  # nor does it leave its throw-away copy behind
