"""Every chapter's training stages under --strategy mirrored over two logical CPUs: here the single-stage chapters
and SRGAN, Age-cGAN and PGAN in test_distribute_stages_of_growth_and_encoding.py. (Files of their own: pytest-xdist
hands out whole files, and each takes minutes.)"""
from __future__ import annotations

from conftest import train_mirrored

NAMES = ("vanilla_gan", "anime_dcgan", "gan_3d", "srgan")  # Age-cGAN and PGAN: test_distribute_stages_of_growth_...


def test_the_single_stage_chapters_and_srgans_two_phases_train_a_step_mirrored_over_two_cpus(tmp_path):
    """The vanilla, anime, 3D and SRGAN (pretraining and adversarial) stages train one step each under --strategy
    mirrored with two replicas, checkpoints written."""
    train_mirrored(tmp_path, NAMES)
    for folder in ("vanilla_gan", "anime_dcgan", "gan_3d", "srgan", "srgan/pretrain"):
        assert (tmp_path / folder / "checkpoints" / "ckpt-1.index").exists(), folder
