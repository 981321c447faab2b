"""Per-layer time of a chapter's network at a train step's shapes: forward, input gradient, weight gradient.

Each layer that multiplies weights (common.flops counts it) is rebuilt alone from its config under the asked
policy, fed a random input of the exact shape it sees in the step (in its compute dtype), and timed as three
compiled functions: the forward pass, the gradient with respect to its input, and the gradient with respect to
its weights, each for a given random output gradient (TensorFlow runs only that gradient's own op). This is what finds
the one layer and shape that makes a step slow (the 3-D chapter's Conv3D backward at some batch sizes).

  python -m bench.layer_profile gan_3d_d --width 0.25 --batch 8 16
  python -m bench.layer_profile anime_d anime_g --policy float32 mixed_bfloat16 --batch 32
  python -m bench.layer_profile gan_3d_d --batch 8 --pad-channels 8 16      # the first conv's input padded
  python -m bench.layer_profile --step gan_3d --width 0.25 --batch 8 16      # tf.profiler: a whole train step

Prints one table per (network, policy, batch) and the totals; --json FILE writes every figure. With --step
CASE (a `bench.precision` builder: gan_3d, age_cgan, anime_dcgan, srgan, pgan, vanilla) it instead traces two
whole train steps with tf.profiler and sums the time of every TensorFlow op by type and by name (the ops of
all threads: their sum can exceed the wall time).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _networks() -> dict[str, Callable]:
    """name -> f(width, size) -> (model, input shape without the batch axis or None for the model's own)."""
    def gan_3d(which):
        def build(width, size):
            from chapters.gan_3d import models
            cube = size or 32
            if which == "g":
                return models.build_generator(cube, width=width), None
            return models.build_discriminator(cube, width=width), None
        return build

    def anime(which):
        def build(width, size):
            from chapters.anime_dcgan import models
            size = size or 64
            return (models.build_generator("book", size) if which == "g" else models.build_discriminator("book", size)), None
        return build

    def age(which):
        def build(width, size):
            from chapters.age_cgan import models
            return (models.build_generator(width=width) if which == "g" else models.build_discriminator(width=width)), None
        return build

    def srgan(which):
        def build(width, size):
            from chapters.srgan import models
            hr = size or 48
            if which == "g":
                return models.build_generator(16, bicubic_skip=True), (hr // 4, hr // 4, 3)
            if which == "d":
                return models.build_discriminator(), (hr, hr, 3)
            return models.build_vgg_features(None, "block3_conv3"), (hr, hr, 3)
        return build

    def pgan(which):
        def build(width, size):
            from chapters.pgan import models
            res = size or 32
            level = models.level_of(res)
            growing = models.Growing(512, level, 64)
            return (growing.generator(level, "stable") if which == "g" else growing.discriminator(level, "stable")), None
        return build

    return {"gan_3d_g": gan_3d("g"), "gan_3d_d": gan_3d("d"), "anime_g": anime("g"), "anime_d": anime("d"),
            "age_cgan_g": age("g"), "age_cgan_d": age("d"), "srgan_g": srgan("g"), "srgan_d": srgan("d"),
            "srgan_vgg": srgan("vgg"), "pgan_g": pgan("g"), "pgan_d": pgan("d")}


NETWORKS = tuple(_networks())


def _time(fn: Callable, args, reps: int) -> float:
    fn(*args)  # trace + warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = fn(*args)
        for tensor in (out if isinstance(out, (list, tuple)) else [out]):
            tensor.numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile_layer(layer, input_shape: tuple, policy: str, reps: int = 3, pad_channels: int = 0) -> dict:
    """Seconds of forward, input gradient and weight gradient of a fresh copy of `layer` at `input_shape`.

    `pad_channels` > 0: zero-pad the input's channels up to a multiple of it (and the kernel with them), the
    SlotConv3D trick, to see what a channel count does to the convolution's speed."""
    import keras
    import tensorflow as tf

    config = layer.get_config()
    config["dtype"] = policy
    fresh = type(layer).from_config(config)
    shape = list(input_shape)
    if pad_channels:
        shape[-1] = -(-shape[-1] // pad_channels) * pad_channels
    fresh.build(tuple(shape))
    compute = fresh.compute_dtype
    x = tf.cast(tf.random.normal(shape), compute)
    weights = [w for w in fresh.trainable_variables]

    y_shape = fresh.compute_output_shape(tuple(shape))
    dy = tf.cast(tf.random.normal(y_shape), compute)

    @tf.function
    def forward(x):
        return fresh(x)

    # Each gradient alone: dL/dx and dL/dW for a given dL/dy need the input (and the weights), not the
    # forward's output, so each function runs only its own backward op(s).
    @tf.function
    def input_gradient(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fresh(x)
        return tape.gradient(y, x, output_gradients=dy)

    @tf.function
    def weight_gradient(x, dy):
        with tf.GradientTape() as tape:
            y = fresh(x)
        return tape.gradient(y, weights, output_gradients=dy)

    del keras
    fwd = _time(forward, (x,), reps)
    grad_x = _time(input_gradient, (x, dy), reps)
    grad_w = _time(weight_gradient, (x, dy), reps) if weights else 0.0
    return {"forward_s": fwd, "input_grad_s": grad_x, "weight_grad_s": grad_w,
            "input": tuple(shape), "dtype": compute}


def profile(network: str, width: float, size: int | None, batch: int, policy: str, reps: int = 3,
            pad_channels: int = 0, log=print) -> dict:
    import keras

    from common.flops import layer_calls

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    model, input_shape = _networks()[network](width, size)
    rows = []
    for layer, ins, outs, flops, name in layer_calls(model, batch, input_shape):
        if not flops:
            continue
        pad = pad_channels if pad_channels and len(ins[0]) == 5 and ins[0][-1] % pad_channels else 0
        timing = profile_layer(layer, ins[0], policy, reps, pad)
        total = timing["forward_s"] + timing["input_grad_s"] + timing["weight_grad_s"]
        rows.append({"layer": name, "class": type(layer).__name__, "input": list(timing["input"]),
                     "output": list(outs[0]), "gflop": flops / 1e9, **timing, "total_s": total,
                     "gflops_per_s": {"forward": flops / max(timing["forward_s"], 1e-9) / 1e9,
                                      "input_grad": flops / max(timing["input_grad_s"], 1e-9) / 1e9,
                                      "weight_grad": flops / max(timing["weight_grad_s"], 1e-9) / 1e9}})
        log(f"  {name:24s} {str(tuple(timing['input'])):26s} -> {str(tuple(outs[0])):24s} {flops / 1e9:8.2f} GFLOP  "
            f"fwd {timing['forward_s'] * 1e3:8.1f} ms  dx {timing['input_grad_s'] * 1e3:8.1f} ms  "
            f"dw {timing['weight_grad_s'] * 1e3:8.1f} ms  ({3 * flops / max(total, 1e-9) / 1e9:6.1f} GFLOP/s)",
            flush=True)
    total = sum(r["total_s"] for r in rows)
    flops = sum(r["gflop"] for r in rows) * 1e9
    log(f"  total: {total:.3f} s for forward + both gradients of {flops / 1e9:.1f} GFLOP forward "
        f"({3 * flops / max(total, 1e-9) / 1e9:.1f} GFLOP/s at backward = 2 x forward)", flush=True)
    keras.mixed_precision.set_global_policy("float32")
    return {"network": network, "width": width, "size": size, "batch": batch, "policy": policy,
            "pad_channels": pad_channels, "layers": rows, "total_s": total, "forward_gflop": flops / 1e9}


def op_profile(step: Callable[[], None], steps: int = 2, top: int = 12) -> dict:
    """tf.profiler trace of `steps` calls of `step` (after one untraced call): seconds per op type and per op."""
    import collections
    import glob
    import shutil
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    step()
    folder = tempfile.mkdtemp(prefix="op-profile-")
    try:
        tf.profiler.experimental.start(folder)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    by_type: collections.Counter = collections.Counter()
    by_name: collections.Counter = collections.Counter()
    for plane in space.planes:
        names = {key: value.name for key, value in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" not in name or name.startswith("ExecutorState"):
                    continue
                op_name, op_type = name.rsplit(":", 1)
                seconds = event.duration_ps / 1e12 / steps
                by_type[op_type] += seconds
                by_name[op_name] += seconds
    return {"wall_s_per_step": wall / steps, "op_seconds_per_step": sum(by_type.values()),
            "by_type": dict(by_type.most_common(top)), "by_name": dict(by_name.most_common(top))}


def _step_case(case: str, width: float, batch: int, policy: str) -> Callable[[], None]:
    import keras

    from bench import precision

    builders = {"gan_3d": lambda: precision.gan_3d(width, batch), "age_cgan": lambda: precision.age_cgan(width, batch),
                "srgan": lambda: precision.srgan(48, batch), "pgan": lambda: precision.pgan(3, batch),
                "anime_dcgan": lambda: precision.anime, "vanilla": lambda: precision.vanilla}
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    try:
        return builders[case]()().step
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.layer_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("networks", nargs="*", metavar="NETWORK", help=", ".join(NETWORKS))
    parser.add_argument("--step", default=None, metavar="CASE",
                        choices=("gan_3d", "age_cgan", "anime_dcgan", "srgan", "pgan", "vanilla"),
                        help="profile a whole train step with tf.profiler instead (anime_dcgan and vanilla at "
                             "their bench batch; the others at --batch)")
    parser.add_argument("--width", type=float, default=0.25, help="gan_3d and age_cgan widths (default 0.25)")
    parser.add_argument("--size", type=int, default=None, help="cube / image / HR size (default the bench's)")
    parser.add_argument("--batch", type=int, nargs="+", default=[16])
    parser.add_argument("--policy", nargs="+", default=["float32"], choices=("float32", "mixed_bfloat16"))
    parser.add_argument("--pad-channels", type=int, nargs="+", default=[0], metavar="N",
                        help="3-D convs: pad an input channel count that N does not divide up to a multiple of N "
                             "(0 = as built)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = []
    if args.step:
        for policy in args.policy:
            for batch in args.batch:
                report = op_profile(_step_case(args.step, args.width, batch, policy))
                print(f"\n{args.step} (width {args.width}), {policy}, batch {batch}: {report['wall_s_per_step']:.2f} s "
                      f"a step, {report['op_seconds_per_step']:.2f} s of ops (all threads)", flush=True)
                for kind in ("by_type", "by_name"):
                    for name, seconds in report[kind].items():
                        print(f"  {seconds:7.3f} s  {name}")
                    print()
                results.append({"step": args.step, "width": args.width, "batch": batch, "policy": policy, **report})
    elif not args.networks:
        parser.error("name a NETWORK, or --step CASE")
    unknown = sorted(set(args.networks) - set(NETWORKS))
    if unknown:
        parser.error(f"unknown network(s) {', '.join(unknown)}; choose from {', '.join(NETWORKS)}")
    for network in args.networks if not args.step else []:
        for policy in args.policy:
            for batch in args.batch:
                for pad in args.pad_channels:
                    print(f"\n{network} (width {args.width}), {policy}, batch {batch}"
                          f"{f', 3-D input channels padded to a multiple of {pad}' if pad else ''}:", flush=True)
                    results.append(profile(network, args.width, args.size, batch, policy, args.reps, pad))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
