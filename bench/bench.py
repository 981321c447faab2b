"""Speed and scale benchmark (make bench): our compiled steps and tf.data loaders against the book's code.

Sections (each compares two sides in one process, interleaved A B A B ... after a warm-up round, and quotes
medians and their ratio):

  steps          per chapter, our compiled train_step (as fit_gan runs it) vs the book's train_on_batch loop
                 on the same networks, batch and optimisers: samples/s
  pipeline       an epoch streamed from real-format files on disk (JPEG folder, 3DShapeNets .mat files,
                 wiki.mat + image tree) vs the same steps on arrays already in memory
  srgan-loader   the SRGAN book's per-step sampler (glob + PIL per batch) vs our tf.data crops, on 20,000 JPEGs
  wiki-loader    the Age-cGAN book's loader (np.concatenate one image at a time) vs our stream, at 1k-8k
                 images: time and peak memory
  upscale        4x super-resolution (chapters/srgan/inference.py), 256x256 -> 1024x1024 (--photo-size 1024 for a
                 1024x1024 input, a 4096x4096 result: a few minutes on a CPU); an untrained generator
                 of the book's size (the weights do not change the speed); its MFU against a float32 matmul
  precision      per chapter, the train step built under float32 and under mixed_bfloat16, interleaved: step
                 time, speed-up, and MFU (analytic FLOPs / step time / the same process's 2048^3 matmul rate
                 of that dtype)
  onednn         (only with --only) float32 steps in child processes with TF_ENABLE_ONEDNN_OPTS=0 and 1,
                 alternating: TensorFlow leaves oneDNN off on CPUs without AVX512_VNNI/BF16 or AMX

  python -m bench.bench                          # everything (make bench), about 20-25 minutes on 2 cores
  python -m bench.bench --quick                  # a smoke run of every section, a few minutes
  python -m bench.bench --only steps --chapters vanilla srgan
  python -m bench.bench --only precision --precision-cases anime_dcgan gan_3d

Prints a table (figure, target, met/missed) and writes bench/results.json with the machine (CPU model, cores,
TensorFlow/Keras versions, load average at start and end) and every measurement. The data sets are generated
into a temporary folder (--work-dir to keep them).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also as `python bench/bench.py`
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common.errors import UserError  # noqa: E402

SECTIONS = ("steps", "pipeline", "srgan-loader", "wiki-loader", "upscale", "precision", "onednn")
DEFAULT_SECTIONS = SECTIONS[:-1]  # onednn starts child processes (minutes per case): asked for by --only
CHAPTERS = ("vanilla", "anime_dcgan", "srgan", "gan_3d", "age_cgan")
WIKI_SIZES, WIKI_SIZES_QUICK = [1000, 2000, 4000, 8000], [250, 500, 1000]
TARGETS = {"steps": 1.0, "pipeline": 0.9, "srgan-loader": 5.0,
           "wiki_time_per_image_ratio": 1.3, "wiki_memory_growth_mb": 64.0}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, steps and images: a smoke run")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION", default=None,
                        help=f"run only these sections ({', '.join(SECTIONS)})")
    parser.add_argument("--chapters", nargs="+", choices=CHAPTERS, default=list(CHAPTERS),
                        help="chapters of the steps section")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per comparison (default 5; --quick 2)")
    parser.add_argument("--srgan-images", type=int, default=None,
                        help="JPEGs in the SRGAN loader's folder (default 20000; --quick 4000)")
    parser.add_argument("--wiki-sizes", type=int, nargs="+", default=None,
                        help=f"image counts of the wiki loader comparison (default {WIKI_SIZES})")
    parser.add_argument("--wiki-budget", type=float, default=None, metavar="SECONDS",
                        help="time allowed to the wiki loaders; a book-loader size predicted to overrun it is "
                             "skipped and its time extrapolated (default 240; --quick 60)")
    parser.add_argument("--photo-size", type=int, default=None,
                        help="side of the photo the upscale section enlarges 4x (default 256, a 1024x1024 result; --quick 128; "
                             "1024 makes a 4096x4096 image, a few minutes on a 2-core CPU)")
    parser.add_argument("--precision-cases", nargs="+", default=None, metavar="CASE",
                        help="cases of the precision section (default all: vanilla anime_dcgan srgan gan_3d "
                             "gan_3d_book age_cgan_half age_cgan pgan pgan_wgan_gp; --quick: vanilla srgan gan_3d "
                             "age_cgan_half)")
    parser.add_argument("--precision-budget", type=float, default=None, metavar="SECONDS",
                        help="timed seconds per precision case, after its warm-up (default 60; --quick 10): a case "
                             "stops once it has used them, after two rounds")
    parser.add_argument("--precision-bf16", choices=("auto", "always", "never"), default="auto",
                        help="which precision cases time a bfloat16 side: auto = all on a CPU with native bfloat16, "
                             "on one without only those where emulated bfloat16 is not 5-10x slower (2-D convs)")
    parser.add_argument("--onednn-cases", nargs="+", default=None, metavar="CASE",
                        help="precision cases of the onednn section (default anime_dcgan srgan gan_3d age_cgan_half "
                             "pgan; --quick: gan_3d)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the generated data sets go (kept); default: a temporary folder, deleted after")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    quick = args.quick
    rounds = args.rounds if args.rounds is not None else (2 if quick else 5)
    if rounds < 1:
        raise UserError("--rounds must be at least 1")
    sections = args.only or list(DEFAULT_SECTIONS)
    wiki_sizes = sorted(args.wiki_sizes or (WIKI_SIZES_QUICK if quick else WIKI_SIZES))
    srgan_images = args.srgan_images or (4000 if quick else 20000)
    photo_size = args.photo_size or (128 if quick else 256)
    if min(wiki_sizes) < 64 or srgan_images < 100 or photo_size < 16:
        raise UserError("--wiki-sizes need at least 64 images, --srgan-images 100 and --photo-size 16 pixels")
    precision_cases = args.precision_cases or None
    from bench.precision import CASES as PRECISION_CASES

    unknown = sorted(set(precision_cases or []) - set(PRECISION_CASES))
    unknown += sorted(set(args.onednn_cases or []) - set(PRECISION_CASES))
    if unknown:
        raise UserError(f"--precision-cases / --onednn-cases: unknown {', '.join(unknown)}; choose from "
                        f"{', '.join(PRECISION_CASES)}")

    from bench import loaders, onednn, precision, steps
    from bench.common import load_average, machine, section_clock
    from common.devices import setup_devices

    load_start = load_average()
    started = time.perf_counter()
    setup_devices("one", False, seed=0, log=lambda _: None)  # GPU memory growth where there is one; float32
    info = machine()
    print(f"{info['cpu']}, {info['cores_usable']} cores, TensorFlow {info['tensorflow']}, Keras {info['keras']}"
          f"{', GPUs: ' + ', '.join(info['gpus']) if info['gpus'] else ', no GPU'}; "
          f"oneDNN {'on' if info['onednn_enabled'] else 'off'}, "
          f"native bfloat16 {'yes' if info['cpu_has_native_bf16'] else 'no'}; "
          f"load average {load_start}",
          flush=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gan-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    clocks: dict[str, float] = {}
    results: dict = {}
    try:
        if {"pipeline", "srgan-loader", "wiki-loader"} & set(sections):
            with section_clock("writing the data sets", clocks):
                if "srgan-loader" in sections:
                    loaders.write_jpegs(work / "photos", srgan_images, 64)
                mats = set(wiki_sizes if "wiki-loader" in sections else [])
                if "pipeline" in sections:
                    mats.add(1000 if quick else 2000)
                if mats:
                    loaders.write_wiki(work / "wiki", max(mats), 128, tuple(sorted(mats)))
                print(f"  in {work}", flush=True)
        if "steps" in sections:
            with section_clock("steps", clocks):
                results["steps"] = steps.run(args.chapters, quick, rounds)
        if "pipeline" in sections:
            with section_clock("pipeline", clocks):
                results["pipeline"] = loaders.pipeline(work, quick, rounds)
        if "srgan-loader" in sections:
            with section_clock("srgan-loader", clocks):
                results["srgan_loader"] = loaders.srgan_loader(work, quick, rounds)
        if "wiki-loader" in sections:
            with section_clock("wiki-loader", clocks):
                budget = args.wiki_budget or (60.0 if quick else 240.0)
                results["wiki_loader"] = loaders.wiki_loader(work, wiki_sizes, budget)
        if "upscale" in sections:
            with section_clock("upscale", clocks):
                results["upscale"] = loaders.upscale(work, photo_size)
        if "precision" in sections:
            with section_clock("precision", clocks):
                names = precision_cases or list(precision.QUICK_CASES if quick else precision.CASES)
                results["precision"] = precision.run(names, quick, rounds, args.precision_budget, args.precision_bf16)
        if "onednn" in sections:
            with section_clock("onednn", clocks):
                names = args.onednn_cases or list(onednn.QUICK_CASES if quick else onednn.DEFAULT_CASES)
                results["onednn"] = onednn.run(names, quick, rounds)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    load_end = load_average()
    run_info = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": info["cpu"], "cores_usable": info["cores_usable"],
                "load_average_start": load_start, "load_average_end": load_end, "quick": quick}
    previous = _previous(args.out) if args.only else {}  # --only: the other sections' figures stay in the file
    merged = {**previous.get("results", {}), **results}
    earlier = previous.get("section_runs") or {  # a file from before section_runs: its machine ran them all
        key: {"cpu": previous.get("machine", {}).get("cpu"),
              "load_average_start": previous.get("machine", {}).get("load_average_start"),
              "load_average_end": previous.get("machine", {}).get("load_average_end"),
              "quick": previous.get("settings", {}).get("quick")} for key in previous.get("results", {})}
    runs = {**earlier, **{_result_key(name): run_info for name in sections}}
    rows = target_rows(merged)
    print_report(target_rows(results), clocks, total)
    summary = {"machine": {**info, "load_average_start": load_start, "load_average_end": load_end},
               "settings": {"quick": quick, "rounds": rounds, "sections": sections, "chapters": args.chapters,
                            "wiki_sizes": wiki_sizes, "srgan_images": srgan_images, "photo_size": photo_size,
                            "precision_cases": precision_cases, "precision_budget_s": args.precision_budget,
                            "precision_bf16": args.precision_bf16, "onednn_cases": args.onednn_cases},
               "targets": {**TARGETS, "precision_speedup": precision.SPEEDUP_TARGET,
                           "precision_mfu": precision.MFU_TARGET},
               "table": [dict(zip(("comparison", "figure", "target", "status"), r)) for r in rows],
               "section_seconds": {**previous.get("section_seconds", {}), **clocks}, "total_seconds": round(total, 1),
               "section_runs": runs, "results": merged}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1, default=_json_default))
    kept = sorted(set(previous.get("results", {})) - set(results))
    print(f"wrote {args.out}" + (f" (kept the earlier figures of {', '.join(kept)})" if kept else ""))
    return 0


def _result_key(section: str) -> str:
    return section.replace("-", "_")


def _previous(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _at(table: dict, n: int):
    """table[n], also from a results.json read back (JSON keys are strings)."""
    return table[n] if n in table else table[str(n)]


def _status(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "MISSED")


def target_rows(results: dict) -> list[list[str]]:
    """[comparison, figure, target, met/missed] for every measurement made."""
    rows = []
    for name, r in results.get("steps", {}).items():
        rows.append([f"train step: {name} (batch {r['batch']})",
                     f"{r['ratio']:.2f}x ({r['ours']['per_s']:.1f} vs {r['book']['per_s']:.1f} samples/s)",
                     f">= {TARGETS['steps']:.1f}x the book loop", _status(r["ratio"] >= TARGETS["steps"])])
    for name, r in results.get("pipeline", {}).items():
        rows.append([f"data pipeline: {name}",
                     f"{r['ratio']:.2f} ({r['disk']['per_s']:.1f} vs {r['memory']['per_s']:.1f} img/s)",
                     f">= {TARGETS['pipeline']} of in-memory", _status(r["ratio"] >= TARGETS["pipeline"])])
    if "srgan_loader" in results:
        r = results["srgan_loader"]
        rows.append([f"SRGAN loader ({r['images']} JPEGs), book at its batch of 1",
                     f"{r['ratio']:.1f}x ({r['ours']['per_s']:.0f} vs {r['book']['per_s']:.0f} img/s)",
                     f">= {TARGETS['srgan-loader']:.0f}x the book's sampler",
                     _status(r["ratio"] >= TARGETS["srgan-loader"])])
        rows.append(["  same, book's sampler at batch 16",
                     f"{r['ratio_vs_book_batch_16']:.1f}x ({r['book_batch_16']['per_s']:.0f} img/s)", "-", "-"])
    if "wiki_loader" in results:
        r = results["wiki_loader"]
        sizes = r["sizes"]
        rows.append([f"wiki loader time, {sizes[0]} -> {sizes[-1]} images",
                     f"{r['ours_time_per_image_ratio']:.2f}x the time per image "
                     f"({_at(r['ours'], sizes[0])['seconds']:.1f} -> {_at(r['ours'], sizes[-1])['seconds']:.1f} s)",
                     f"linear (<= {TARGETS['wiki_time_per_image_ratio']}x per image)",
                     _status(r["ours_time_per_image_ratio"] <= TARGETS["wiki_time_per_image_ratio"])])
        rows.append([f"wiki loader memory, {sizes[0]} -> {sizes[-1]} images",
                     f"{r['ours_memory_growth_mb']:+.0f} MB peak RSS "
                     f"({_at(r['ours'], sizes[0])['peak_rss_delta_mb']:.0f} -> {_at(r['ours'], sizes[-1])['peak_rss_delta_mb']:.0f})",
                     f"flat (<= {TARGETS['wiki_memory_growth_mb']:.0f} MB growth)",
                     _status(r["ours_memory_growth_mb"] <= TARGETS["wiki_memory_growth_mb"])])
        for n in sizes:
            book = _at(r["book"], n)
            figure = (f"~{book['predicted_seconds']:.0f} s (extrapolated), ~{book['predicted_peak_rss_delta_mb']:.0f} MB"
                      if book.get("skipped") else f"{book['seconds']:.1f} s, +{book['peak_rss_delta_mb']:.0f} MB")
            ours = _at(r["ours"], n)
            rows.append([f"  wiki {n} images: book's loader / ours", f"{figure} / {ours['seconds']:.1f} s, "
                         f"+{ours['peak_rss_delta_mb']:.0f} MB", "-", "-"])
    if "upscale" in results:
        r = results["upscale"]
        target = "<= 180 s" if r["input"] == "1024x1024" else "(shown)"
        rows.append([f"upscale {r['input']} -> {r['output']} ({r['tiles']} tile(s))",
                     f"{r['seconds']:.0f} s, peak RSS +{r['peak_rss_delta_mb']:.0f} MB", target, "-"])
        if "flops" in r:
            rows.append([f"  upscale MFU ({r['flops'] / 1e9:.0f} GFLOP; the book's layers {r['books_flops'] / 1e9:.0f})",
                         f"{r['mfu_float32']:.2f} ({r['gflops_per_s']:.1f} GFLOP/s; float32 matmul "
                         f"{r['matmul_gflops_per_s_float32']:.1f})", "(shown)", "-"])
        if r["input"] != "1024x1024":
            rows.append(["  1024x1024 input, predicted (x pixels)", f"~{r['predicted_seconds_1024_input']:.0f} s",
                         "<= 180 s", "-"])
    if "precision" in results:
        from bench.precision import rows as precision_rows

        rows += precision_rows(results["precision"], _status)
    if "onednn" in results:
        from bench.onednn import rows as onednn_rows

        rows += onednn_rows(results["onednn"])
    return rows


def print_report(rows: list[list[str]], clocks: dict, total: float) -> None:
    from bench.common import table

    print("\n" + table(rows, ["comparison", "figure", "target", "status"]))
    print("\nsection wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in clocks.items()) + f"; total {total:.0f} s")


if __name__ == "__main__":
    from common.cli import run_main

    run_main(main)
