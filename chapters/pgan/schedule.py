"""PGAN's phase schedule: the images and minibatch of every phase, checked before a run starts, and the memory
of training at the final resolution (refused in one sentence when it cannot fit)."""
from __future__ import annotations

from common.errors import UserError

# The paper's minibatch (appendix A.1): 16 up to 128x128, then 14, 6 and 3 (for 8 GB GPUs).
PAPER_BATCH = {256: 14, 512: 6, 1024: 3}
# The default run's schedule: many images where steps are cheap (4x4 to 16x16), then the most at 32x32, where more
# images lowered the faces' FID most (README).
# A CPU affords a few hundred steps a phase (the paper: 50,000), hence the learning rate 10x the paper's.
DEFAULT_FADE = "6000,8:10000,16:8000"  # the bare count: 32x32 and up
DEFAULT_STABLE = "64000,4:20000,8:10000,16:8000"  # the bare count: 32x32 and up (FID against images there: README)
LOSSES = ("logistic", "wgan-gp")  # --loss: the default first, then the paper's
LOSS_FLAGS = {"logistic": ("r1_gamma",), "wgan-gp": ("gp_weight", "drift")}  # the flags only that loss reads
DEFAULT_BATCHES = "4:64,8:64"  # twice the images per step where a step costs little more than its overhead
DEFAULT_LEARNING_RATE = 0.01
DEFAULT_HALF_LIFE = 3000
DEFAULT_FMAP_BASE = 1024  # 64 feature maps (--max-filters) up to 16x16, 32 at 32x32


def check_args(args) -> None:
    if args.strategy == "multiworker":  # every worker would write the run's checkpoints, grids and models
        raise UserError("the pgan chapter trains on one machine (--strategy mirrored spreads it over its GPUs); "
                        "--strategy multiworker is not supported")
    res = args.max_resolution
    if res < 8 or res > 1024 or res & (res - 1):
        raise UserError(f"--max-resolution must be a power of two from 8 to 1024, got {res}")
    for flag in ("tick_images", "latent_dim", "max_filters", "faces"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    from chapters.pgan.models import level_of, resolution

    for level in range(level_of(res) + 1):  # every phase up to --max-resolution has its count
        if level:
            phase_images(args, "fade", resolution(level))
        phase_images(args, "stable", resolution(level))
    batch_sizes(args)
    if args.walk_steps < 2:
        raise UserError(f"--walk-steps must be at least 2, got {args.walk_steps}")


def images_spec(text) -> str | int:
    """An argparse type: N (every resolution) or RES:N pairs, with at most one bare N for the rest."""
    if isinstance(text, int):  # a saved run's config
        return text
    parse_images(text)
    return text.replace(" ", "")


def parse_images(spec) -> tuple[int | None, dict[int, int]]:
    """(images for resolutions not named, {resolution: images}) of an --fade-images / --stable-images value."""
    if isinstance(spec, int):
        return spec, {}
    rest, sizes = None, {}
    for item in str(spec).replace(" ", "").split(","):
        if not item:
            continue
        try:
            parts = [int(v) for v in item.split(":")]
        except ValueError:
            parts = []
        if len(parts) == 1 and rest is None and parts[0] >= 1:
            rest = parts[0]
        elif len(parts) == 2 and parts[1] >= 1 and parts[0] >= 4 and parts[0] & (parts[0] - 1) == 0:
            sizes[parts[0]] = parts[1]
        else:
            raise UserError(f"image counts are N or RES:N pairs separated by commas (a resolution a power of two "
                            f"from 4, counts at least 1, at most one bare N), e.g. 8:20000,32:12000; got {item!r}")
    return rest, sizes


def phase_images(args, kind: str, res: int) -> int:
    """Real images of the phase `kind` ("fade" or "stable") at res x res."""
    rest, sizes = parse_images(getattr(args, f"{kind}_images"))
    if res in sizes:
        return sizes[res]
    if rest is None:
        raise UserError(f"--{kind}-images names no count for {res}x{res}: add {res}:N or a bare N for the rest")
    return rest


def batch_sizes(args) -> dict[int, int]:
    """Minibatch per resolution: --batch-size (at most the paper's 14/6/3 above 128), then --batch-sizes."""
    sizes, res = {}, 4
    while res <= 1024:
        sizes[res] = min(args.batch_size, PAPER_BATCH.get(res, args.batch_size))
        res *= 2
    for item in (args.batch_sizes or "").replace(" ", "").split(","):
        if not item:
            continue
        try:
            key, value = (int(v) for v in item.split(":"))
        except ValueError:
            raise UserError(f"--batch-sizes takes RES:N pairs separated by commas, e.g. 4:64,8:32; got {item!r}") \
                from None
        if key not in sizes or value < 1:
            raise UserError(f"--batch-sizes {item}: the resolution must be a power of two from 4 to 1024 and "
                            "the batch at least 1")
        sizes[key] = value
    return sizes


def memory_estimate(args) -> tuple[float, str, str]:
    """(bytes, what, flags to lower) of training at --max-resolution: the fade-in step there (both resolutions'
    paths, the larger phase), the weights with their gradients and Adam's two moments, and the images in memory.

    The step's activations are counted twice (layer outputs kept for the backward pass, and the gradient penalty's
    second backward pass and temporaries): measured peak RSS of one CPU step at 32x32..128x128 grew by 1.7-1.8
    times the layer outputs of G and D, plus about 0.1 GiB for the compiled step itself.
    """
    from chapters.pgan import models
    from common.memory import activation_bytes

    res = args.max_resolution
    level, batch = models.level_of(res), batch_sizes(args)[res]
    g_maps, d_maps = models.feature_maps(level, args.max_filters, args.latent_dim, fmap_base=args.fmap_base)
    step = activation_bytes(g_maps + d_maps, batch, factor=2.0) + 2 ** 28
    weights = 4 * 4 * sum(models.parameter_count(level, args.max_filters, args.latent_dim, fmap_base=args.fmap_base))
    if args.data:  # decoded images are cached up to --cache-mb
        images, image_flag = args.cache_mb * 2 ** 20, "--cache-mb"
    else:  # the faces are rendered at --max-resolution: a uint8 copy, and float32 while rendering / as the cache
        images, image_flag = args.faces * res * res * 3 * (1 + 2 * 4), "--faces"
    maps = models.filters_at(res, args.max_filters, args.fmap_base)
    what = (f"training at {res}x{res} (batch {batch}, {maps} feature maps there; "
            f"{images / 2 ** 30:,.1f} GiB of it the training images)")
    flags = f"the batch size at {res}x{res} (--batch-size or --batch-sizes {res}:N), --max-filters, {image_flag} " \
            "or --max-resolution"
    return step + weights + images, what, flags


def check_memory(args) -> None:
    """One sentence (exit 2) instead of a run that grows until the kernel kills it."""
    from common.memory import check_fits

    check_fits(*memory_estimate(args))


def phase_list(max_level: int) -> list[tuple[int, str]]:
    """[(0, stable), (1, fade), (1, stable), ..., (max_level, stable)]."""
    return [(0, "stable")] + [(level, kind) for level in range(1, max_level + 1) for kind in ("fade", "stable")]


def phase_name(level: int, kind: str) -> str:
    from chapters.pgan.models import resolution

    res = resolution(level)
    return f"{res}x{res} {'fade-in' if kind == 'fade' else 'stabilise'}"
