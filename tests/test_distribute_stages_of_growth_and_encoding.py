"""Age-cGAN's three stages and PGAN's phases under --strategy mirrored over two logical CPUs. (Files of their own,
this one and test_distribute_every_stage.py: pytest-xdist hands out whole files, and each takes minutes.)"""
from __future__ import annotations

from conftest import train_mirrored

NAMES = ("age_cgan", "age_cgan_encoder", "age_cgan_optimize", "pgan")


def test_age_cgan_stages_and_pgan_phases_train_mirrored_over_two_cpus(tmp_path):
    """Age-cGAN (GAN, encoder and optimize stages, in that order on one run) and PGAN (4x4, an 8x8 fade-in with its
    average Gs, 8x8) train their steps under --strategy mirrored with two replicas, checkpoints written."""
    train_mirrored(tmp_path, NAMES)
    for folder in ("age_cgan", "age_cgan/encoder", "age_cgan/optimize", "pgan"):
        assert (tmp_path / folder / "checkpoints" / "ckpt-1.index").exists(), folder
    assert (tmp_path / "age_cgan" / "models" / "encoder_optimized.keras").exists()
    assert (tmp_path / "pgan" / "samples" / "02_8x8_stable.png").exists()  # every phase ran
