"""Shared parts of the GAN cookbook: data, training loop, logging, checkpoints, metrics."""
