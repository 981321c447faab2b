"""float32 against mixed_bfloat16 train steps, one process, interleaved; and their model-FLOPs utilisation.

For every case the chapter's networks are built twice, once under each Keras global dtype policy (a layer
takes the policy in force when it is built, so the two sets live side by side), compiled the way the chapter
trains (our `train_step` through `make_train_function()` on a `training_stream`, as in the `steps` section;
PGAN's own compiled step), then timed A B A B ... after one untimed warm-up step each (the trace). A 2048^3
matmul in float32 and in bfloat16 runs in the same rounds, so each case's MFU divides by the matmul rate of
its own dtype measured under the same load:

  MFU = analytic FLOPs of the step (common.flops) / median step time / median matmul FLOP/s of that dtype

The FLOPs count the convolutions and matmuls only (common.flops), so an MFU near 1 means the step runs its
MACs as fast as this machine runs one large matmul; the elementwise layers, the optimizer and the input
pipeline are what a step spends beyond that. The speed-up is float32's median step time over bfloat16's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from bench.common import matmul_unit, median

POLICIES = ("float32", "mixed_bfloat16")
SPEEDUP_TARGET = 1.7  # bfloat16 over float32, for the chapters the issue names
MFU_TARGET = 0.7  # the convolutional chapters
DATASET_SIZE = 128


@dataclass
class Built:
    step: Callable[[], None]  # one train step, waited for
    flops: dict  # common.flops counts of one step ("total" and its parts)


@dataclass
class Case:
    name: str
    what: str
    batch: int
    build: Callable[[], Built]  # builds under the current global policy
    steps: int = 1  # steps per timed unit
    speedup_target: bool = False
    mfu_target: bool = False
    max_rounds: int = 99
    notes: list[str] = field(default_factory=list)


def _images(rng: np.random.Generator, shape: tuple[int, ...], n: int = DATASET_SIZE) -> np.ndarray:
    return rng.uniform(-1, 1, (n, *shape)).astype(np.float32)


def _compiled_step(model, arrays: dict, batch: int) -> Callable[[], None]:
    from bench.steps import _ours

    return _ours(model, arrays, batch)


# --- the cases (each builds under the global policy in force) ----------------------------------------------

def vanilla() -> Built:
    import keras

    from chapters.vanilla_gan import models
    from common.flops import gan_step_flops
    from common.gan import GAN

    batch, latent = 32, 100
    keras.utils.set_random_seed(0)
    g, d = models.build_generator(latent), models.build_discriminator()
    gan = GAN(g, d, latent)
    gan.compile(d_optimizer=models.optimizer(), g_optimizer=models.optimizer())
    real = _images(np.random.default_rng(0), models.IMAGE_SHAPE)
    return Built(_compiled_step(gan, {"real": real}, batch), gan_step_flops(g, d, batch))


def anime() -> Built:
    import keras

    from chapters.anime_dcgan import models
    from common.flops import gan_step_flops
    from common.gan import GAN

    batch, latent, size = 32, 100, 64
    keras.utils.set_random_seed(0)
    g, d = models.build_generator("book", size, latent), models.build_discriminator("book", size)
    gan = GAN(g, d, latent)
    d_opt, g_opt = models.optimizers("book")
    gan.compile(d_optimizer=d_opt, g_optimizer=g_opt)
    real = _images(np.random.default_rng(0), (size, size, 3))
    return Built(_compiled_step(gan, {"real": real}, batch), gan_step_flops(g, d, batch))


def srgan(hr_size: int = 48, batch: int = 4) -> Callable[[], Built]:
    def build() -> Built:
        import keras

        from chapters.srgan import models
        from chapters.srgan.images import quantize
        from common.flops import srgan_step_flops

        rng = np.random.default_rng(0)
        hr = _images(rng, (hr_size, hr_size, 3), 32)
        lr = quantize(models.downsample(hr)).numpy()
        keras.utils.set_random_seed(0)
        vgg = models.build_vgg_features(None, "block3_conv3")  # random weights: the speed is ImageNet's
        g, d = models.build_generator(16, bicubic_skip=True), models.build_discriminator()
        gan = models.SRGAN(g, d, models.ContentLoss(vgg))
        gan.compile(d_optimizer=models.optimizer(), g_optimizer=models.optimizer())
        return Built(_compiled_step(gan, {"lr": lr, "hr": hr}, batch), srgan_step_flops(g, d, vgg, batch, hr_size))
    return build


def gan_3d(width: float, batch: int = 16, cube: int = 32) -> Callable[[], Built]:
    def build() -> Built:
        import keras

        from chapters.gan_3d import models
        from common.flops import gan_step_flops

        rng = np.random.default_rng(0)
        real = (rng.uniform(size=(32, cube, cube, cube, 1)) > 0.7).astype(np.float32)
        keras.utils.set_random_seed(0)
        g, d = models.build_generator(cube, width=width), models.build_discriminator(cube, width=width)
        gan = models.VoxelGAN(g, d, d_acc_threshold=1.0)
        d_opt, g_opt = models.optimizers(g_lr=1e-3, d_lr=2e-4, g_beta1=0.5, d_beta1=0.5)  # the CPU default rates
        gan.compile(d_optimizer=d_opt, g_optimizer=g_opt)
        return Built(_compiled_step(gan, {"real": real}, batch), gan_step_flops(g, d, batch))
    return build


def age_cgan(width: float, batch: int = 32) -> Callable[[], Built]:
    def build() -> Built:
        import keras

        from chapters.age_cgan import models
        from common.flops import gan_step_flops
        from common.gan import ConditionalGAN

        classes = models.NUM_CLASSES
        rng = np.random.default_rng(0)
        real = _images(rng, models.IMAGE_SHAPE)
        labels = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, DATASET_SIZE)]
        keras.utils.set_random_seed(0)
        g, d = models.build_generator(width=width), models.build_discriminator(width=width)
        gan = ConditionalGAN(g, d, models.LATENT_DIM, classes)
        gan.compile(d_optimizer=models.optimizer(), g_optimizer=models.optimizer())
        return Built(_compiled_step(gan, {"real": real, "labels": labels}, batch), gan_step_flops(g, d, batch))
    return build


def pgan(level: int = 3, batch: int = 32, max_filters: int = 64, latent_dim: int = 512,
         fmap_base: int | None = None, loss: str = "logistic") -> Callable[[], Built]:
    """The stable phase at 4 * 2**level pixels with the chapter's CPU defaults (fmap_base None: --fmap-base's
    default, 32 feature maps at 32x32), through its GrowthPhase's step, as the chapter trains it (its toRGB and
    score layers are float32 under mixed_bfloat16). `loss`: "logistic" (the default: R1 with gamma 1) or
    "wgan-gp" (the paper's)."""
    def build() -> Built:
        import keras
        import tensorflow as tf

        from chapters.pgan import models
        from chapters.pgan.phase import GrowthPhase
        from chapters.pgan.schedule import DEFAULT_FMAP_BASE
        from common.flops import gan_step_flops

        keras.utils.set_random_seed(0)
        growing = models.Growing(latent_dim, level, max_filters, fmap_base=fmap_base or DEFAULT_FMAP_BASE)
        g, d = growing.generator(level, "stable"), growing.discriminator(level, "stable")
        phase = GrowthPhase(g, d, g, models.optimizer(), models.optimizer(), {}, False, tf.Variable(1.0),
                            loss=loss, r1_gamma=1.0, gp_weight=10.0, drift=0.001)
        phase.build_optimizers()
        res = models.resolution(level)
        reals = tf.constant(_images(np.random.default_rng(0), (res, res, 3), batch))
        step = tf.function(lambda key: phase.train_step({"real": reals, **phase.noise(batch, key)}))
        counter = [0]

        def run() -> None:
            counter[0] += 1
            logs = step(tf.constant([0, counter[0]], tf.int64))
            float(logs["d_loss"])

        return Built(run, gan_step_flops(g, d, batch, wgan_gp=loss == "wgan-gp", r1=loss == "logistic"))
    return build


def cases(quick: bool) -> dict[str, Case]:
    return {
        "vanilla": Case("vanilla", "vanilla GAN, dense 500-500 (batch 32)", 32, vanilla, steps=5 if quick else 20),
        "anime_dcgan": Case("anime_dcgan", "anime DCGAN, the book's pair at 64 px (batch 32)", 32, anime,
                            speedup_target=True, mfu_target=True, max_rounds=4),
        "srgan": Case("srgan", "SRGAN 12->48 px, bicubic skip, VGG19 block3_conv3 loss (batch 4; make train-srgan)",
                      4, srgan(48, 4), speedup_target=True, mfu_target=True, max_rounds=4),
        "gan_3d": Case("gan_3d", "3D-GAN 32^3, width 0.25 (the CPU default; batch 16)", 16, gan_3d(0.25, 16),
                       speedup_target=True, mfu_target=True, max_rounds=4),
        "gan_3d_book": Case("gan_3d_book", "3D-GAN 32^3, the book's filters (width 1; batch 16)", 16,
                            gan_3d(1.0, 16), speedup_target=True, mfu_target=True, max_rounds=3),
        "age_cgan_half": Case("age_cgan_half", "Age-cGAN 64 px, width 0.5 (make train-age-cgan; batch 32)", 32,
                              age_cgan(0.5, 32), speedup_target=True, mfu_target=True, max_rounds=4),
        "age_cgan": Case("age_cgan", "Age-cGAN 64 px, the book's networks (width 1; batch 32)", 32, age_cgan(1.0, 32),
                         speedup_target=True, mfu_target=True, max_rounds=4),
        "pgan": Case("pgan", "PGAN 32x32 stable phase, logistic + R1, 64 filters to 16x16, 32 at 32x32 (the CPU "
                     "default; batch 32)", 32, pgan(3, 32, 64), mfu_target=True, max_rounds=4),
        "pgan_wgan_gp": Case("pgan_wgan_gp", "PGAN 32x32 stable phase, WGAN-GP (the paper's loss), the CPU default's "
                             "networks (batch 32)", 32, pgan(3, 32, 64, loss="wgan-gp"), mfu_target=True,
                             max_rounds=4),
    }


CASES = tuple(cases(False))
QUICK_CASES = ("vanilla", "srgan", "gan_3d", "age_cgan_half")
# Where the CPU has no native bfloat16, TensorFlow emulates it (Eigen): on a 2-core AMD EPYC (Zen 1) the steps ran
# 4-9x slower than float32 (SRGAN 6x, Age-cGAN width 0.5 4.5x, PGAN 9x; a 3-D convolution alone 9x), so only
# these cases then time a bfloat16 side, to show it (--precision-bf16 always: every case). --quick: vanilla only.
EMULATED_PROBES = ("vanilla", "age_cgan_half")


def interleave_within(sides: dict[str, Callable[[], None]], rounds: int, budget_s: float,
                      min_rounds: int = 2) -> dict[str, list[float]]:
    """bench.common.interleave with a time budget: one untimed warm-up of every side, then up to `rounds`
    rounds A B A B ..., stopping once the timed rounds have used `budget_s`, but not before `min_rounds`
    (one only where the warm-up round alone took more than the budget)."""
    start = time.perf_counter()
    for run in sides.values():
        run()
    if time.perf_counter() - start > budget_s:
        min_rounds = 1
    times: dict[str, list[float]] = {name: [] for name in sides}
    spent = 0.0
    for index in range(rounds):
        if index >= min_rounds and spent >= budget_s:
            break
        for name, run in sides.items():
            begin = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - begin)
            spent += times[name][-1]
    return times


def _onednn_enabled() -> bool | None:
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def _side(policy: str, run: Callable[[], None], steps: int) -> Callable[[], None]:
    import keras

    def unit() -> None:
        keras.mixed_precision.set_global_policy(policy)  # a retrace, if any, sees the side's own policy
        for _ in range(steps):
            run()
    return unit


def run(names: list[str], quick: bool, rounds: int, budget_s: float | None = None, bf16: str = "auto",
        log=print) -> dict:
    """Per case: median step time per policy, the speed-up, the step's FLOPs and each policy's MFU.

    `budget_s`: seconds of timed rounds per case (default 60, --quick 10); a case stops once its rounds have
    used it, after at least two rounds (one where the warm-up alone took longer). The warm-up (the trace
    and a first step) is outside it. `bf16`: "auto" times the bfloat16 side of every case on a CPU with
    native bfloat16 and of EMULATED_PROBES only on one without; "always" every case; "never" none."""
    import keras

    from bench.common import load_average
    from common.devices import cpu_has_native_bf16

    table = cases(quick)
    budget_s = budget_s if budget_s is not None else (10.0 if quick else 60.0)
    native = cpu_has_native_bf16()
    results: dict = {"policies": list(POLICIES), "speedup_target": SPEEDUP_TARGET, "mfu_target": MFU_TARGET,
                     "cpu_has_native_bf16": native, "onednn_enabled": _onednn_enabled(),
                     "budget_s_per_case": budget_s, "bf16_sides": bf16,
                     "matmul": "2048^3, 3 per unit, float32 and bfloat16 interleaved with every case's steps",
                     "cases": {}}
    if not native:
        probes = ", ".join(EMULATED_PROBES[:1] if quick else EMULATED_PROBES)
        log("  this CPU has no native bfloat16 (no avx512_bf16 / amx_bf16 flag): TensorFlow emulates it, so the "
            "speed-up targets do not apply here" + (f"; bfloat16 is timed for {probes} only (--precision-bf16 "
                                                    "always: every case)" if bf16 == "auto" else ""), flush=True)
    matmul = {"float32": matmul_unit("float32"), "bfloat16": matmul_unit("bfloat16")}
    try:
        for name in names:
            case = table[name]
            probes = EMULATED_PROBES[:1] if quick else EMULATED_PROBES
            with_bf16 = bf16 == "always" or (bf16 == "auto" and (native or name in probes))
            policies = POLICIES if with_bf16 else POLICIES[:1]
            keras.backend.clear_session()
            start = time.perf_counter()
            built = {}
            for policy in policies:
                keras.mixed_precision.set_global_policy(policy)
                built[policy] = case.build()
            keras.mixed_precision.set_global_policy("float32")
            sides = {policy: _side(policy, built[policy].step, case.steps) for policy in policies}
            sides.update({f"matmul_{k}": unit.run for k, unit in matmul.items()})
            case_rounds = min(rounds, case.max_rounds)
            load = load_average()
            times = interleave_within(sides, case_rounds, budget_s, min_rounds=1 if quick else min(2, case_rounds))
            keras.mixed_precision.set_global_policy("float32")
            rates = {k: unit.flops / median(times[f"matmul_{k}"]) for k, unit in matmul.items()}
            flops = built["float32"].flops["total"]
            step_s = {p: (median(times[p]) / case.steps if p in times else None) for p in POLICIES}
            mfu = {p: (flops / step_s[p] / rates["float32" if p == "float32" else "bfloat16"] if step_s[p] else None)
                   for p in POLICIES}
            speedup = step_s["float32"] / step_s["mixed_bfloat16"] if with_bf16 else None
            results["cases"][name] = {
                "what": case.what, "batch": case.batch, "steps_per_round": case.steps, "rounds": case_rounds,
                "rounds_run": len(times["float32"]), "step_s": step_s, "speedup": speedup,
                "flops": built["float32"].flops,
                "gflops_per_s": {p: (flops / step_s[p] / 1e9 if step_s[p] else None) for p in POLICIES},
                "matmul_gflops_per_s": {k: v / 1e9 for k, v in rates.items()}, "mfu": mfu,
                "speedup_target": SPEEDUP_TARGET if case.speedup_target and native else None,
                "speedup_target_not_applicable": bool(case.speedup_target and not native),
                "bf16_skipped": None if with_bf16 else "no native bfloat16 on this CPU (emulated: 5-10x slower here)",
                "mfu_target": MFU_TARGET if case.mfu_target else None,
                "times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
                "load_average": load, "seconds": round(time.perf_counter() - start, 1)}
            bf16_text = (f"bfloat16 {step_s['mixed_bfloat16']:.3f} s/step, {speedup:.2f}x" if with_bf16
                         else "bfloat16 not timed (emulated here)")
            mfu_text = f"{mfu['float32']:.2f}" + (f" / {mfu['mixed_bfloat16']:.2f}" if with_bf16 else "")
            log(f"  {name}: float32 {step_s['float32']:.3f} s/step, {bf16_text}; {flops / 1e9:.1f} GFLOP/step; "
                f"MFU {mfu_text} (matmul {rates['float32'] / 1e9:.0f} / {rates['bfloat16'] / 1e9:.0f} GFLOP/s; "
                f"load {load}; {results['cases'][name]['seconds']:.0f} s)", flush=True)
            del built, sides
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return results


def rows(results: dict, status: Callable[[bool | None], str]) -> list[list[str]]:
    """The bench table's rows: one for the speed-up and one for the MFU of every case."""
    out = []
    for name, r in results.get("cases", {}).items():
        s, mfu = r["step_s"], r["mfu"]
        target = r["speedup_target"]
        if r["speedup"] is None:
            out.append([f"bfloat16 vs float32: {r['what']}", f"float32 {s['float32']:.3f} s/step; bfloat16 not timed",
                        "n/a: no native bf16 on this CPU", "-"])
        else:
            out.append([f"bfloat16 vs float32: {r['what']}",
                        f"{r['speedup']:.2f}x ({s['float32']:.3f} -> {s['mixed_bfloat16']:.3f} s/step)",
                        f">= {target}x" if target else
                        ("n/a: no native bf16 on this CPU" if r.get("speedup_target_not_applicable") else "(shown)"),
                        status(r["speedup"] >= target if target else None)])
        target = r["mfu_target"]
        native = results.get("cpu_has_native_bf16", True)
        # emulated bfloat16 is no measure of the networks: where the CPU lacks it the target reads float32's MFU
        measured = [v for p, v in mfu.items() if v is not None and (native or p == "float32")]
        figure = " / ".join("-" if v is None else f"{v:.2f}" for v in mfu.values())
        out.append([f"  MFU float32 / bfloat16 ({r['flops']['total'] / 1e9:.1f} GFLOP/step)", figure,
                    (f">= {target} each" if native else f">= {target} (float32; bf16 emulated here)") if target
                    else "(shown)", status(min(measured) >= target if target else None)])
    return out
