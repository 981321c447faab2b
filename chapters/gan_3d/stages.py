"""3D-GAN's stages behind chapters/gan_3d/main.py: train, sample (PNG renders, .npy or .obj meshes),
interpolate (strips between latents) and evaluate (shape metrics against the training shapes)."""
from __future__ import annotations

from pathlib import Path

from common import stabilize
from common.errors import UserError

# --precision auto keeps float32 on a CPU until bfloat16's Conv3D speed and results are measured (README).
BF16_ON_CPU = False


def fixed_latents(count: int, z_std: float, seed: int, latent_dim: int = 200):
    import numpy as np

    z = np.random.default_rng(seed).standard_normal((count, 1, 1, 1, latent_dim)).astype(np.float32)
    return z * np.float32(z_std)


def train(volumes, run, args) -> None:
    import tensorflow as tf

    from chapters.gan_3d import models
    from common.devices import precision_of, setup_devices
    from common.train import Schedule, fit_gan
    from common.voxels import render_grid

    print(f"{len(volumes)} {args.category} shapes of {args.cube_len}³ voxels "
          f"({'3DShapeNets ' + args.data if args.data else 'procedural'}), {volumes.mean():.1%} filled")
    options = stabilize.Stabilizers.from_args(args)
    if options.active():
        print("stabilisation: " + ", ".join(options.active()))
    strategy = setup_devices(args.strategy, precision_of(args), args.seed, bf16_on_cpu=BF16_ON_CPU,
                             reproducible_on_cpu=True)
    with strategy.scope():
        generator = models.build_generator(args.cube_len, width=args.width, occupancy=float(volumes.mean()),
                                           full_resolution=args.g_output == "full-res")
        gan = models.VoxelGAN(generator,
                              models.build_discriminator(args.cube_len, width=args.width, pack=options.pack),
                              z_std=args.z_std, d_acc_threshold=args.d_acc_threshold,
                              instance_noise=args.instance_noise, connectivity=args.connectivity, options=options)
        d_optimizer, g_optimizer = models.optimizers(args.g_lr, args.d_lr, args.g_beta1, args.d_beta1)
        gan.compile(d_optimizer=d_optimizer, g_optimizer=g_optimizer, jit_compile=args.xla)
    latents = fixed_latents(args.grid, args.z_std, args.seed)

    def to_volumes(row: dict) -> dict:
        return {"real": tf.cast(row["real"], tf.float32)[..., None]}

    fit_gan(gan, run, Schedule.from_args(args), strategy, len(volumes), _take(volumes, to_volumes),
            sample=lambda: gan.sample(latents), render=lambda shapes: render_grid(shapes))


def _take(volumes, transform):
    from common.data import in_memory

    return in_memory({"real": volumes}, transform)


def _generator(run, args):
    from common.checkpoints import load_model

    return load_model(run.model_path("generator"), f"train first: python chapters/gan_3d/main.py --run-dir {run}")


def _generate(generator, z):
    import numpy as np

    return np.asarray(generator.predict(z, batch_size=32, verbose=0))[..., 0]


def sample(run, args) -> int:
    import numpy as np

    from common.images import save_png
    from common.run import output_file
    from common.voxels import render_grid, write_obj

    if args.out and args.format == "obj":  # one file per shape into a folder: the folder must be new or empty
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--format obj writes one file per shape into a folder, and {out} is a file")
        if out.is_dir() and any(out.iterdir()) and not args.overwrite:
            raise UserError(f"--out {out} already holds files; pass --overwrite to write over its shape_*.obj "
                            "files, or choose another folder")
    elif args.out:
        output_file(args.out, args.overwrite)
    generator = _generator(run, args)
    shapes = _generate(generator, fixed_latents(args.num, args.z_std, args.seed, generator.inputs[0].shape[-1]))
    if args.format == "png":
        out = Path(args.out or run.samples / f"sample_seed{args.seed}.png")
        save_png(out, render_grid(shapes))
    elif args.format == "npy":
        out = Path(args.out or run.samples / f"sample_seed{args.seed}.npy")
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(out, (shapes > 0.5).astype(np.uint8))
    else:
        out = Path(args.out or run.samples / f"obj_seed{args.seed}")
        faces = [write_obj(out / f"shape_{i:03d}.obj", shape)[1] for i, shape in enumerate(shapes)]
        print(f"meshes of {min(faces)} to {max(faces)} faces (exposed voxel faces only)")
    print(f"wrote {args.num} generated {args.category} shapes (seed {args.seed}, threshold 0.5) to {out}")
    return 0


def atomic_save_npy(path: Path, array) -> None:
    """np.save via a temporary name: an interrupted write never leaves half an array under `path`."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def interpolate(run, args) -> int:
    import numpy as np

    from common.images import save_png
    from common.run import output_file
    from common.voxels import interpolate_latents, render_grid

    if args.out:
        output_file(args.out, args.overwrite)
    generator = _generator(run, args)
    steps = max(2, args.num)
    ends = fixed_latents(2 * args.strips, args.z_std, args.seed, generator.inputs[0].shape[-1])
    z = np.concatenate([interpolate_latents(ends[2 * r], ends[2 * r + 1], steps) for r in range(args.strips)])
    out = Path(args.out or run.samples / f"interpolation_seed{args.seed}.png")
    save_png(out, render_grid(_generate(generator, z), columns=steps))
    print(f"wrote {args.strips} interpolation strips of {steps} shapes (seed {args.seed}) to {out}")
    return 0


def evaluate(run, args) -> int:
    import time

    from chapters.gan_3d.data import load_volumes
    from common.evaluate import write_scores
    from common.voxels import shape_metrics

    started = time.time()
    generator = _generator(run, args)
    training = load_volumes(args.data, args.category, args.split, args.cube_len, args.num_shapes)
    latent_dim = generator.inputs[0].shape[-1]
    shapes = _generate(generator, fixed_latents(args.num, args.z_std, args.seed + 1, latent_dim))
    scores = shape_metrics(shapes, training)
    epoch = run.epochs_trained()
    write_scores(run, scores, epoch, f"epoch {epoch}, {args.num} generated vs {len(training)} training shapes",
                 started, {"epoch": epoch, "samples": args.num, "training_shapes": len(training), "seed": args.seed + 1})
    return 0
