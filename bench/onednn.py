"""float32 train steps with TensorFlow's oneDNN kernels off and on (TF_ENABLE_ONEDNN_OPTS=0 / 1).

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it is imported, and by default turns oneDNN on only on CPUs
with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX; elsewhere (an AVX2-only AMD EPYC, say) its convolutions run
on Eigen's kernels. The two settings cannot share a process, so each round starts one child process per
setting, alternating (off on off on ...): a child builds the case's networks (`bench.precision`'s builders),
runs one untimed step, then times `--steps` steps and a 2048^3 float32 matmul in turn, and reports medians.
Each setting's MFU is against its own process's matmul rate.

  python -m bench.bench --only onednn --onednn-cases gan_3d age_cgan_half      # (not in the default sections)
  python -m bench.onednn --child gan_3d 3                                      # one child, prints JSON
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("0", "1")
DEFAULT_CASES = ("anime_dcgan", "srgan", "gan_3d", "age_cgan_half", "pgan")
QUICK_CASES = ("gan_3d",)


def child(case: str, steps: int) -> dict:
    import statistics

    from bench import precision
    from bench.common import MatmulUnit
    from tensorflow.python.util import _pywrap_util_port

    built = precision.cases(False)[case].build()
    built.step()
    matmul = MatmulUnit("float32")
    matmul.run()
    step_times, matmul_times = [], []
    for _ in range(steps):
        start = time.perf_counter()
        built.step()
        step_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        matmul.run()
        matmul_times.append(time.perf_counter() - start)
    step_s = statistics.median(step_times)
    rate = matmul.flops / statistics.median(matmul_times)
    return {"onednn": bool(_pywrap_util_port.IsMklEnabled()), "step_s": step_s, "step_times_s": step_times,
            "matmul_gflops_per_s": rate / 1e9, "flops": built.flops["total"],
            "mfu": built.flops["total"] / step_s / rate}


def run(cases: list[str], quick: bool, rounds: int, log=print) -> dict:
    from bench.common import load_average, median

    steps = 1 if quick else 2
    rounds = 1 if quick else min(rounds, 2)
    results: dict = {"settings": list(SETTINGS), "steps_per_child": steps, "rounds": rounds, "cases": {}}
    for case in cases:
        start = time.perf_counter()
        children: dict[str, list[dict]] = {s: [] for s in SETTINGS}
        load = load_average()
        for _ in range(rounds):
            for setting in SETTINGS:
                env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting, "TF_CPP_MIN_LOG_LEVEL": "2"}
                done = subprocess.run([sys.executable, "-m", "bench.onednn", "--child", case, str(steps)], cwd=ROOT,
                                      env=env, capture_output=True, text=True, timeout=1800)
                if done.returncode:
                    raise RuntimeError(f"bench.onednn child {case} (TF_ENABLE_ONEDNN_OPTS={setting}) failed:\n"
                                       f"{done.stderr[-2000:]}")
                children[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
        step_s = {s: median([t for c in children[s] for t in c["step_times_s"]]) for s in SETTINGS}
        rate = {s: median([c["matmul_gflops_per_s"] for c in children[s]]) for s in SETTINGS}
        flops = children["0"][0]["flops"]
        mfu = {s: flops / step_s[s] / (rate[s] * 1e9) for s in SETTINGS}
        speedup = step_s["0"] / step_s["1"]
        results["cases"][case] = {"step_s": step_s, "matmul_gflops_per_s": rate, "mfu": mfu, "speedup": speedup,
                                  "flops": flops, "children": children, "load_average": load,
                                  "onednn_reported": {s: children[s][0]["onednn"] for s in SETTINGS},
                                  "seconds": round(time.perf_counter() - start, 1)}
        log(f"  {case}: oneDNN off {step_s['0']:.2f} s/step (MFU {mfu['0']:.2f}), on {step_s['1']:.2f} s/step "
            f"(MFU {mfu['1']:.2f}): {speedup:.2f}x (load {load})", flush=True)
    return results


def rows(results: dict) -> list[list[str]]:
    out = []
    for name, r in results.get("cases", {}).items():
        s, mfu = r["step_s"], r["mfu"]
        out.append([f"float32 oneDNN on vs off: {name}",
                    f"{r['speedup']:.2f}x ({s['0']:.2f} -> {s['1']:.2f} s/step; MFU {mfu['0']:.2f} -> {mfu['1']:.2f})",
                    "(shown)", "-"])
    return out


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2)))
    else:
        print(__doc__)
