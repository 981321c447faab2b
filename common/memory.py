"""Refuse a training step that cannot fit in memory, before anything is built.

A run whose step needs more memory than the machine has does not fail cleanly: it grows until the kernel kills
it (or another process on a shared machine). Each chapter estimates its step from the shapes its flags give
(activations kept for the backward pass dominate) and calls `check_fits` first.
"""
from __future__ import annotations

import os

from common.errors import UserError

GIB = 2 ** 30


def machine_memory_bytes() -> int:
    """Memory this process may use: MemAvailable from /proc/meminfo, else physical memory."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def activation_bytes(feature_maps: list[tuple[int, ...]], batch: int, dtype_bytes: int = 4,
                     factor: float = 3.0) -> float:
    """Bytes of a train step's activations: every layer output (per-sample shapes) kept for the backward pass,
    times `factor` for its gradient and the temporaries around it."""
    per_sample = 0
    for shape in feature_maps:
        size = 1
        for dim in shape:
            size *= int(dim)
        per_sample += size
    return float(per_sample) * batch * dtype_bytes * factor


def check_fits(estimate_bytes: float, what: str, flags: str, available: int | None = None) -> None:
    """UserError naming the estimate and the machine's memory when a step of `what` would not fit."""
    available = machine_memory_bytes() if available is None else available
    if estimate_bytes > available:
        raise UserError(f"{what} would need about {estimate_bytes / GIB:,.1f} GiB for one training step, more than "
                        f"the {available / GIB:,.1f} GiB of memory available on this machine; lower {flags}")
