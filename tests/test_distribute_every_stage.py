"""Every chapter's training stages under --strategy mirrored over two logical CPUs. (A file of its own: pytest-xdist
hands out whole files, and this test takes minutes.)"""
from __future__ import annotations

import json

from conftest import run_script


def test_every_chapters_training_stages_train_a_step_mirrored_over_two_cpus(tmp_path):
    """The vanilla, anime, 3D, Age-cGAN (GAN, encoder and optimize stages), SRGAN (pretraining and adversarial) and
    PGAN (4x4, an 8x8 fade-in with its average Gs, 8x8) train steps under --strategy mirrored with two replicas:
    one step each (two per PGAN phase), checkpoints written."""
    result = run_script("tests/mirrored_every_chapter.py", tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(runs) == {"vanilla_gan", "anime_dcgan", "gan_3d", "age_cgan", "age_cgan_encoder", "age_cgan_optimize",
                         "srgan", "pgan"}
    for name, outcome in runs.items():
        assert outcome == {"code": 0, "replicas": [2]}, (name, outcome, result.stderr[-3000:])
    for folder in ("vanilla_gan", "anime_dcgan", "gan_3d", "age_cgan", "srgan", "srgan/pretrain", "pgan"):
        assert (tmp_path / folder / "checkpoints" / "ckpt-1.index").exists(), folder
    for stage in ("encoder", "optimize"):
        assert (tmp_path / "age_cgan" / stage / "checkpoints" / "ckpt-1.index").exists(), stage
    assert (tmp_path / "age_cgan" / "models" / "encoder_optimized.keras").exists()
    assert (tmp_path / "pgan" / "samples" / "02_8x8_stable.png").exists()  # every phase ran
