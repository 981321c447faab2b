"""A real TensorBoard server reads a run's logs: loss scalars and the sample grid come back over HTTP."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from conftest import ROOT


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_tensorboard_serves_the_losses_and_samples_of_a_run(vanilla_run):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(vanilla_run / "logs"),
                               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        deadline, tags = time.time() + 90, {}
        while time.time() < deadline:  # the server needs a few seconds to start and to read the logs
            assert server.poll() is None, "tensorboard exited"
            try:
                tags = json.loads(_get(f"{base}/scalars/tags")).get("train", {})
                if {"d_loss", "g_loss"} <= set(tags):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(tags), tags
        points = json.loads(_get(f"{base}/scalars/scalars?run=train&tag=g_loss"))
        assert [step for _, step, _ in points] == [1, 2]
        assert all(value > 0 for _, _, value in points)

        assert "samples" in json.loads(_get(f"{base}/images/tags"))["train"]
        images = json.loads(_get(f"{base}/images/images?run=train&tag=samples"))
        assert [image["step"] for image in images] == [1, 2]
        png = _get(f"{base}/images/individualImage?{images[-1]['query']}")
        assert png.startswith(b"\x89PNG")
    finally:
        server.terminate()
        server.wait(timeout=30)
