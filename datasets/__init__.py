"""Embedded default data (shipped or generated deterministically) and fetch/prepare scripts."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MNIST_8K = ROOT / "mnist_8k.npz"
