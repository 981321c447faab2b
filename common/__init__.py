"""Shared parts of the GAN cookbook: data, training loop, logging, checkpoints, metrics."""
import os

# TensorFlow uses its oneDNN CPU kernels by default only on CPUs with AVX512-VNNI/BF16 or AMX. On the others
# (AVX2 servers, most laptops) they make every convolutional train step 1.3-1.9x faster than Eigen's
# (make bench ARGS='--only onednn'). TensorFlow reads this once, at import: TF_ENABLE_ONEDNN_OPTS=0 turns it off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
