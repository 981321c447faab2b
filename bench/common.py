"""What every section of `make bench` shares: interleaved timing, peak memory, the machine, the table."""
from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator


# --- timing -----------------------------------------------------------------------------------------------

def interleave(sides: dict[str, Callable[[], float | None]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Runs each side `warmup` times untimed, then `rounds` times in turn (A B A B ...).

    A side is a callable doing one unit of work; it returns its own duration in seconds (to leave set-up out)
    or None to be timed here. Returns every side's timed durations.
    """
    for _ in range(warmup):
        for run in sides.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            start = time.perf_counter()
            measured = run()
            times[name].append(measured if measured is not None else time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summary(times: list[float], per_unit: float) -> dict:
    """Median seconds per unit of work and `per_unit` units (samples, images) per second at that median."""
    m = median(times)
    return {"median_s": m, "per_s": per_unit / m if m > 0 else float("nan"), "times_s": [round(t, 5) for t in times]}


class MatmulUnit:
    """`reps` n x n x n matmuls of `dtype` in one compiled call: the reference rate of an MFU.

    `run()` is one unit of work for `interleave` (it waits for the result); `flops` its FLOPs (2 n^3 per
    matmul). The operands are arguments, not captured constants, so nothing is folded at trace time."""

    def __init__(self, dtype: str, n: int = 2048, reps: int = 3) -> None:
        import tensorflow as tf

        self.dtype, self.n, self.reps = dtype, n, reps
        self.flops = 2.0 * n ** 3 * reps
        rng = tf.random.Generator.from_seed(0)
        self.a = tf.cast(rng.normal((n, n)), dtype)
        self.b = tf.cast(rng.normal((n, n)), dtype)

        @tf.function
        def product(a, b):
            total = tf.constant(0.0)
            for _ in range(reps):
                c = tf.matmul(a, b)
                total += tf.cast(c[0, 0], tf.float32)
                a = a + tf.cast(total * 0.0, dtype)  # a data dependency: the matmuls run one after another
            return total

        self._product = product

    def run(self) -> None:
        float(self._product(self.a, self.b))


def matmul_unit(dtype: str, n: int = 2048, reps: int = 3) -> MatmulUnit:
    return MatmulUnit(dtype, n, reps)


def matmul_rate(dtype: str, rounds: int = 3, n: int = 2048) -> float:
    """Median FLOP/s of an n^3 matmul of `dtype` (one warm-up call first)."""
    unit = MatmulUnit(dtype, n)
    times = interleave({"matmul": unit.run}, rounds=rounds)["matmul"]
    return unit.flops / median(times)


# --- memory -------------------------------------------------------------------------------------------------

def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kb / 1024


class PeakRSS:
    """Peak resident memory of this process over a block, as a delta above the RSS at its start (MB).

    Linux: the kernel's high-water mark VmHWM, reset at the start by writing 5 to /proc/self/clear_refs, so
    allocations made in C++ (TensorFlow) and NumPy count alike. Where that reset is refused, a thread samples
    VmRSS every 5 ms instead (`method` says which was used).
    """

    def __init__(self) -> None:
        self.start_mb = self.peak_mb = 0.0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakRSS":
        import gc

        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self.method = "VmHWM after clear_refs"
        except OSError:
            self.method = "VmRSS sampled every 5 ms"
            self._thread = threading.Thread(target=self._sample, daemon=True)
        self.start_mb = self.peak_mb = rss_mb()
        if self._thread:
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __exit__(self, *exc) -> None:
        if self._thread:
            self._stop.set()
            self._thread.join()
        else:
            hwm = _status_kb("VmHWM")
            self.peak_mb = max(self.peak_mb, (hwm or 0) / 1024)
        self.peak_mb = max(self.peak_mb, rss_mb())

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.start_mb


# --- the machine -------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from common.devices import cpu_has_native_bf16

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    try:
        from tensorflow.python.util import _pywrap_util_port

        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        onednn = None
    memory = None
    try:
        with open("/proc/meminfo") as handle:
            memory = round(int(handle.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gb": memory, "gpus": gpus, "python": platform.python_version(), "platform": platform.platform(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cpu_has_native_bf16": cpu_has_native_bf16(), "cpu_avx512": "avx512f" in _cpu_flags(),
            "onednn_enabled": onednn, "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# --- output ------------------------------------------------------------------------------------------------

@contextmanager
def section_clock(name: str, record: dict) -> Iterator[None]:
    start = time.perf_counter()
    print(f"\n== {name} ==", flush=True)
    try:
        yield
    finally:
        record[name] = round(time.perf_counter() - start, 1)
        print(f"== {name}: {record[name]:.0f} s", flush=True)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [header, ["-" * w for w in widths], *rows]]
    return "\n".join(lines)


def markdown_table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
