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
  upscale        4x super-resolution in 128-pixel tiles, 256x256 -> 1024x1024 (--photo-size 1024 for a
                 1024x1024 input: 121 tiles, too long for the 20-minute budget on a CPU); an untrained generator
                 of the book's size (the weights do not change the speed)

  python -m bench.bench                          # everything (make bench), about 15-20 minutes on 2 cores
  python -m bench.bench --quick                  # a smoke run of every section, a few minutes
  python -m bench.bench --only steps --chapters vanilla srgan

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

SECTIONS = ("steps", "pipeline", "srgan-loader", "wiki-loader", "upscale")
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
                             "1024 takes 121 tiles, about 10-25 minutes on a 2-core CPU)")
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
    sections = args.only or list(SECTIONS)
    wiki_sizes = sorted(args.wiki_sizes or (WIKI_SIZES_QUICK if quick else WIKI_SIZES))
    srgan_images = args.srgan_images or (4000 if quick else 20000)
    photo_size = args.photo_size or (128 if quick else 256)
    if min(wiki_sizes) < 64 or srgan_images < 100 or photo_size < 16:
        raise UserError("--wiki-sizes need at least 64 images, --srgan-images 100 and --photo-size 16 pixels")

    from bench import loaders, steps
    from bench.common import load_average, machine, section_clock
    from common.devices import setup_devices

    load_start = load_average()
    started = time.perf_counter()
    setup_devices("one", False, seed=0, log=lambda _: None)  # GPU memory growth where there is one; float32
    info = machine()
    print(f"{info['cpu']}, {info['cores_usable']} cores, TensorFlow {info['tensorflow']}, Keras {info['keras']}"
          f"{', GPUs: ' + ', '.join(info['gpus']) if info['gpus'] else ', no GPU'}; load average {load_start}",
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
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    rows = target_rows(results)
    print_report(rows, clocks, total)
    summary = {"machine": {**info, "load_average_start": load_start, "load_average_end": load_average()},
               "settings": {"quick": quick, "rounds": rounds, "sections": sections, "chapters": args.chapters,
                            "wiki_sizes": wiki_sizes, "srgan_images": srgan_images, "photo_size": photo_size},
               "targets": TARGETS, "table": [dict(zip(("comparison", "figure", "target", "status"), r)) for r in rows],
               "section_seconds": clocks, "total_seconds": round(total, 1), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1, default=_json_default))
    print(f"wrote {args.out}")
    return 0


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


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
                     f"({r['ours'][sizes[0]]['seconds']:.1f} -> {r['ours'][sizes[-1]]['seconds']:.1f} s)",
                     f"linear (<= {TARGETS['wiki_time_per_image_ratio']}x per image)",
                     _status(r["ours_time_per_image_ratio"] <= TARGETS["wiki_time_per_image_ratio"])])
        rows.append([f"wiki loader memory, {sizes[0]} -> {sizes[-1]} images",
                     f"{r['ours_memory_growth_mb']:+.0f} MB peak RSS "
                     f"({r['ours'][sizes[0]]['peak_rss_delta_mb']:.0f} -> {r['ours'][sizes[-1]]['peak_rss_delta_mb']:.0f})",
                     f"flat (<= {TARGETS['wiki_memory_growth_mb']:.0f} MB growth)",
                     _status(r["ours_memory_growth_mb"] <= TARGETS["wiki_memory_growth_mb"])])
        for n in sizes:
            book = r["book"][n]
            figure = (f"~{book['predicted_seconds']:.0f} s (extrapolated), ~{book['predicted_peak_rss_delta_mb']:.0f} MB"
                      if book.get("skipped") else f"{book['seconds']:.1f} s, +{book['peak_rss_delta_mb']:.0f} MB")
            ours = r["ours"][n]
            rows.append([f"  wiki {n} images: book's loader / ours", f"{figure} / {ours['seconds']:.1f} s, "
                         f"+{ours['peak_rss_delta_mb']:.0f} MB", "-", "-"])
    if "upscale" in results:
        r = results["upscale"]
        rows.append([f"upscale {r['input']} -> {r['output']} ({r['tiles']} tile(s))",
                     f"{r['seconds']:.0f} s, peak RSS +{r['peak_rss_delta_mb']:.0f} MB", "(shown, no target)", "-"])
        if r["input"] != "1024x1024":
            rows.append(["  1024x1024 input (121 tiles), predicted", f"~{r['predicted_seconds_1024_input']:.0f} s",
                         "-", "-"])
    return rows


def print_report(rows: list[list[str]], clocks: dict, total: float) -> None:
    from bench.common import table

    print("\n" + table(rows, ["comparison", "figure", "target", "status"]))
    print("\nsection wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in clocks.items()) + f"; total {total:.0f} s")


if __name__ == "__main__":
    from common.cli import run_main

    run_main(main)
