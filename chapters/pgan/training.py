"""PGAN's training: the real images at every resolution and the Trainer that grows the networks phase by phase,
each phase a common.train.fit_gan run of its GrowthPhase (chapters/pgan/phase.py) in ticks of about --tick-images
images (one checkpoint each, numbered on across the phases), with an exact resume, even mid-fade."""
from __future__ import annotations

import time

from chapters.pgan.schedule import batch_sizes, phase_images, phase_list, phase_name
from common import seeds
from common.errors import UserError

# --precision auto trains in bfloat16 on a CPU with native bfloat16 (README: the default's figures in both)
BF16_ON_CPU = True
FACES_SEED = 0  # the embedded training set is procedural_faces.make_dataset(--faces, FACES_SEED, --max-resolution)


class TrainingData:
    """The real images at any resolution: procedural faces box-filtered down from --max-resolution (cached per
    resolution), or an image folder decoded straight at each resolution (cached while it fits --cache-mb)."""

    def __init__(self, faces=None, paths=None, cache_mb: int = 2048) -> None:
        self.faces, self.paths, self.cache_mb = faces, paths, cache_mb
        self.count = len(faces) if faces is not None else len(paths)
        self._cache: dict = {}

    @classmethod
    def from_args(cls, args, log=print) -> "TrainingData":
        import numpy as np

        if args.data:
            from common.data.images import find_images, usable_images

            paths = usable_images(find_images(args.data), log)
            log(f"{len(paths)} images in {args.data}")
            return cls(paths=[str(p) for p in paths], cache_mb=args.cache_mb)
        from datasets.procedural_faces import make_dataset

        started = time.time()
        images = make_dataset(args.faces, FACES_SEED, args.max_resolution)[0]
        faces = np.rint((images + 1.0) * 127.5).astype(np.uint8)
        log(f"rendered {args.faces} procedural faces at {args.max_resolution}x{args.max_resolution} "
            f"({time.time() - started:.1f} s)")
        return cls(faces=faces)

    def array(self, res: int):
        """All images at res x res as float32 in [-1, 1], or None when a folder's images do not fit the cache."""
        import numpy as np

        if res in self._cache:
            return self._cache[res]
        self._cache.clear()  # one resolution at a time
        if self.faces is not None:
            factor = self.faces.shape[1] // res
            out = np.empty((self.count, res, res, self.faces.shape[-1]), np.float32)
            for s in range(0, self.count, 512):  # box filter, the paper's downsampling of the training images
                chunk = self.faces[s:s + 512].astype(np.float32)
                out[s:s + 512] = chunk.reshape(len(chunk), res, factor, res, factor, -1).mean(axis=(2, 4))
            self._cache[res] = out / 127.5 - 1.0
        elif self.count * res * res * 3 * 4 <= self.cache_mb * 2 ** 20:
            self._cache[res] = self._decode_all(res)
        else:
            return None
        return self._cache[res]

    def _decode_all(self, res: int):
        import numpy as np
        import tensorflow as tf

        from common.data.images import decode_image

        files = tf.data.Dataset.from_tensor_slices(self.paths)
        images = files.map(lambda p: decode_image(p, res), num_parallel_calls=tf.data.AUTOTUNE)
        batches = [b.numpy() for b in images.ignore_errors(log_warning=True).batch(256)]
        return np.concatenate(batches).astype(np.float32)

    def take(self, res: int):
        """(count, take(index) -> {"real": image}) for common.data.stream.training_stream."""
        import tensorflow as tf

        from common.data.images import decode_image
        from common.data.stream import in_memory

        cached = self.array(res)
        if cached is not None:
            return len(cached), in_memory({"real": cached})
        files = tf.constant(self.paths)
        return self.count, lambda index: {"real": decode_image(tf.gather(files, index), res)}

    def sample(self, res: int, count: int, seed: int):
        import numpy as np

        cached = self.array(res)
        if cached is None:
            paths, self.paths = self.paths, list(np.random.default_rng(seed).permutation(self.paths)[:count])
            try:
                return self._decode_all(res)
            finally:
                self.paths = paths
        chosen = np.random.default_rng(seed).choice(len(cached), size=min(count, len(cached)), replace=False)
        return cached[np.sort(chosen)]


def make_progress():
    """Where the growth stands, saved in every checkpoint: phase index (hence resolution), images, alpha."""
    import tensorflow as tf

    class Progress(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="progress")
            self.phase = tf.Variable(0, dtype=tf.int64, trainable=False, name="phase")
            self.resolution = tf.Variable(4, dtype=tf.int64, trainable=False, name="resolution")
            self.alpha = tf.Variable(1.0, dtype=tf.float32, trainable=False, name="alpha")
            self.phase_images = tf.Variable(0, dtype=tf.int64, trainable=False, name="phase_images")
            self.total_images = tf.Variable(0, dtype=tf.int64, trainable=False, name="total_images")
            self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps")
            self.phase_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="phase_seconds")

    return Progress()


def phase_ticks(length: int, batch: int, tick_images: int) -> tuple[int, int]:
    """(steps per tick, ticks) of a phase of `length` images: a checkpoint every tick of about --tick-images images
    (whole steps, at most the phase), the phase rounded up to whole ticks (alpha reaches 1 at `length` images, the
    rest is stable)."""
    steps = max(1, min(-(-tick_images // batch), -(-length // batch)))
    return steps, -(-length // (steps * batch))


class ResumePoint:
    """What `common.checkpoints.restore_newest` restores from each checkpoint it tries, newest first.

    A checkpoint holds the layers of every level trained so far (`Growing.layers_up_to` of its phase), that phase's
    Adam states and the progress. All of its layers are restored, whatever phase comes next: when the run goes on
    inside the checkpoint's phase, its Adam states too; when that phase had ended (a finished run grown with a
    larger --max-resolution, or a run killed in a new phase before that phase's first checkpoint) the next phase
    starts from those layers with a fresh Adam, as every phase does. Every tensor is read before any variable is
    assigned, so a damaged checkpoint (cut short, garbage) changes nothing and the one before it is tried.
    """

    def __init__(self, growing, progress, phases, length, max_resolution: int, learning_rate: float,
                 average=None) -> None:
        self.growing, self.progress, self.phases, self.length = growing, progress, phases, length
        self.max_resolution, self.learning_rate, self.average = max_resolution, learning_rate, average
        self.path, self.number, self.level, self.optimizers = None, 0, 0, None
        self.average_missing = False

    def restore(self, path: str):
        import tensorflow as tf

        from chapters.pgan import models

        reader = tf.train.load_checkpoint(path)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)  # a cut-short file fails here (IndexError, DataLossError), before any assignment
        value = lambda name: int(reader.get_tensor(f"progress/{name}/.ATTRIBUTES/VARIABLE_VALUE"))  # noqa: E731
        phase, res, phase_images = value("phase"), value("resolution"), value("phase_images")
        if res > self.max_resolution:
            raise UserError(f"this run has grown to {res}x{res}; --max-resolution {self.max_resolution} is below "
                            f"it: resume with --max-resolution {res} or more (nothing was changed)")
        level, kind = self.phases[phase]
        items = {**self.growing.layers_up_to(level), "progress": self.progress}
        missing = not any(key.startswith("average_layers/") for key in reader.get_variable_to_shape_map())
        if self.average is not None and not missing:  # (a run without the average: Gs starts as G)
            items["average_layers"] = self.average.layers_up_to(level)["generator_layers"]
        optimizers = None
        if phase_images < self.length(level, kind):  # the run goes on inside this phase, with its Adam states
            optimizers = models.optimizer(self.learning_rate), models.optimizer(self.learning_rate)
            optimizers[0].build(self.growing.generator(level, kind).trainable_variables)
            optimizers[1].build(self.growing.discriminator(level, kind).trainable_variables)
            items.update(g_optimizer=optimizers[0], d_optimizer=optimizers[1])
        status = tf.train.Checkpoint(**items).restore(path)
        for optimizer in optimizers or ():  # the rate typed now (config.json's), not the checkpoint's
            optimizer.learning_rate = self.learning_rate
        self.path, self.number, self.level, self.optimizers = path, int(path.rsplit("-", 1)[1]), level, optimizers
        self.average_missing = self.average is not None and missing
        return status


class Trainer:
    """Runs the phases in order, restoring the newest checkpoint first with --resume (ResumePoint)."""

    def __init__(self, run, args, data: TrainingData, log=print) -> None:
        self.run, self.args, self.data, self.log = run, args, data, log

    def train(self) -> dict:
        import keras

        from common.devices import precision_of, replicas_dividing, setup_devices

        args, log = self.args, self.log
        self.strategy = strategy = setup_devices(args.strategy, precision_of(args), args.seed, log,
                                                 bf16_on_cpu=BF16_ON_CPU)
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            log("the pgan chapter trains in float32 or bfloat16, not float16 (its gradient penalty would need loss "
                "scaling through a second derivative): float32")
            keras.mixed_precision.set_global_policy("float32")
        for res, batch in batch_sizes(args).items():
            if res <= args.max_resolution:
                replicas_dividing(strategy, batch, f"the {res}x{res} batch size (--batch-sizes / --batch-size)")
        with strategy.scope():  # every layer, optimizer and variable of the growth is the strategy's
            return self._grow()

    def _grow(self) -> dict:
        from chapters.pgan import models
        from chapters.pgan.phase import GrowthPhase
        from common.checkpoints import restore_newest
        from common.tensorboard import TensorBoardWriter
        from common.train import fixed_latents

        args, run, log = self.args, self.run, self.log
        max_level = models.level_of(args.max_resolution)
        shape = (args.latent_dim, max_level, args.max_filters, 3, args.seed, args.fmap_base)
        self.growing = growing = models.Growing(*shape)
        # Gs: the same layers with the same initial weights (same seed), an average of G's from then on
        average = models.Growing(*shape) if args.g_average_half_life else None
        self.sampler = average or growing  # what the grids show and models/generator.keras holds
        self.phases, sizes = phase_list(max_level), batch_sizes(args)
        progress = self.progress = make_progress()
        self.latents = fixed_latents(64, args.latent_dim, args.seed)
        self.writer = TensorBoardWriter(run)  # the fade-in strips and the phases' last grids
        resumed = None
        if args.resume is not None:
            resumed = ResumePoint(growing, progress, self.phases, self._length, args.max_resolution,
                                  args.learning_rate, average)
            restore_newest(resumed, run.checkpoints, log)
            run.commit_config()  # the flags typed now are the run's from here on (a failed resume changed nothing)
        first = int(progress.phase.numpy())
        if resumed and not resumed.optimizers:
            first += 1  # the checkpoint was written at the end of that phase (its grid and models are saved)
        if first >= len(self.phases):
            log(f"{run} has finished growing to {args.max_resolution}x{args.max_resolution}; pass a larger "
                "--max-resolution to grow further")
            return {}
        log(f"training {len(self.phases) - first} phases up to {args.max_resolution}x{args.max_resolution} on "
            f"{self.data.count} images; run: {run}  (TensorBoard: make tensorboard)")
        last: dict = {}
        # checkpoints are numbered on across the phases, from the restored one's number (not from the flags typed
        # now, which may size the earlier phases differently)
        self.next_tick = resumed.number - int(progress.phase_images.numpy()) // self._tick_images(first) \
            if resumed and resumed.optimizers else (resumed.number if resumed else 0)
        for index in range(first, len(self.phases)):
            level, kind = self.phases[index]
            res, fading = models.resolution(level), kind == "fade"
            batch, length = sizes[res], self._length(level, kind)
            generator, discriminator = growing.generator(level, kind), growing.discriminator(level, kind)
            if resumed and index == first and resumed.optimizers:  # on inside the checkpoint's phase
                g_opt, d_opt = resumed.optimizers
                log(f"resumed {run} at {phase_name(level, kind)} ({res}x{res}), alpha "
                    f"{float(progress.alpha.numpy()):.3f}, {int(progress.phase_images.numpy())} of {length} images "
                    f"of the phase, {int(progress.total_images.numpy())} in all, from {resumed.path}")
            else:
                g_opt, d_opt = models.optimizer(args.learning_rate), models.optimizer(args.learning_rate)
                g_opt.build(generator.trainable_variables)  # a fresh Adam per phase, as the paper's code resets it
                d_opt.build(discriminator.trainable_variables)
                if resumed and index == first:
                    top = models.resolution(resumed.level)
                    trained = f"4x4 to {top}x{top}" if top > 4 else "4x4"
                    log(f"resumed {run} from {resumed.path}: the trained layers of {trained} go on into "
                        f"{phase_name(level, kind)} with a fresh Adam (as at every new phase), "
                        f"{int(progress.total_images.numpy())} images in all so far")
                progress.phase.assign(index)
                progress.resolution.assign(res)
                progress.phase_images.assign(0)
                progress.phase_seconds.assign(0.0)
                progress.alpha.assign(0.0 if fading else 1.0)
            items = {**growing.layers_up_to(level), "g_optimizer": g_opt, "d_optimizer": d_opt, "progress": progress}
            fade_layers = growing.fade_layers(level) if fading else []
            pairs, beta = [], 0.0
            if average is not None:
                average.generator(level, kind)  # builds its fade layer too
                items["average_layers"] = average.layers_up_to(level)["generator_layers"]
                if resumed and index == first and resumed.average_missing:  # a run from before the average
                    for name, layer in items["average_layers"].items():
                        layer.set_weights(items["generator_layers"][name].get_weights())
                pairs = [(a, w) for name, layer in items["generator_layers"].items()
                         for a, w in zip(items["average_layers"][name].weights, layer.weights)]
                beta = 0.5 ** (batch / args.g_average_half_life)  # per step of `batch` images
                fade_layers = fade_layers + ([average.fade_layers(level)[0]] if fading else [])
            phase = GrowthPhase(generator, discriminator, self.sampler.generator(level, kind), g_opt, d_opt, items,
                                fading, progress.alpha, loss=args.loss, r1_gamma=args.r1_gamma,
                                gp_weight=args.gp_weight, drift=args.drift)
            phase.compile(jit_compile=bool(args.xla))
            last = self._phase(index, level, kind, batch, length, phase, fade_layers, pairs, beta)
            if last is None:
                return {}
        log(f"done: {run}  final grid: {self.final_grid}  generator: {run.model_path('generator')}")
        return last

    def _tick_images(self, index: int) -> int:
        """The images of one tick of phase `index`."""
        from chapters.pgan import models

        level, kind = self.phases[index]
        batch = batch_sizes(self.args)[models.resolution(level)]
        return phase_ticks(self._length(level, kind), batch, self.args.tick_images)[0] * batch

    def _phase(self, index, level, kind, batch, length, phase, fade_layers, pairs, beta):
        """Phase `index` through common.train.fit_gan: one epoch per tick (a checkpoint, a grid, a history row and the
        TensorBoard scalars each), its step the GrowthPhase's, the growth's bookkeeping in its callbacks."""
        from chapters.pgan import models
        from chapters.pgan.phase import GeneratorAverage, GrowthProgress
        from common.train import Schedule, fit_gan

        args, run, log, progress = self.args, self.run, self.log, self.progress
        res = models.resolution(level)
        done, total = int(progress.phase_images.numpy()), int(progress.total_images.numpy())
        steps, ticks = phase_ticks(length, batch, args.tick_images)
        first_tick = self.next_tick
        if done % (steps * batch):
            raise UserError(f"the run's checkpoint stops {done} images into {phase_name(level, kind)}, not at a tick "
                            f"of {steps * batch} images (--tick-images {args.tick_images}, batch {batch}): resume it "
                            "with the --tick-images and --batch-sizes it was trained with (a run saved by an older "
                            "version of this chapter mid-phase resumes only with that version)")
        count, take = self.data.take(res)
        if count < batch:
            raise UserError(f"{count} training images are fewer than one batch of {batch} at {res}x{res}")
        if args.stop_after_images is not None and total >= args.stop_after_images:
            if not done:  # a checkpoint at the phase's start, numbered above every other (a resume goes on after it)
                self._checkpoint(phase.checkpoint_items(), first_tick + 1)
            log(f"stopped after {total} images (--stop-after-images) at {phase_name(level, kind)}, alpha "
                f"{float(progress.alpha.numpy()):.3f}; --resume goes on")
            return None
        name = f"{index:02d}_{res}x{res}_{kind}"
        cpu_started = time.process_time()

        def phase_end(seconds: float) -> None:  # before the last tick's checkpoint, so that a kill loses none of it
            self._phase_end(phase, index, level, kind, name, first_tick + ticks, ticks * steps * batch, seconds,
                            time.process_time() - cpu_started)

        growth = GrowthProgress(progress, length, batch, fade_layers, res, index, ticks * steps * batch,
                                stop_after=args.stop_after_images, at_end=phase_end,
                                at_half=lambda alpha, tick: self._fade_strip(level, alpha, tick))
        phase.growth_callbacks = [growth] + ([GeneratorAverage(pairs, beta)] if pairs else [])
        schedule = Schedule(epochs=first_tick + ticks, batch_size=batch, seed=seeds.phase_seed(args.seed, index),
                            steps_per_epoch=steps, checkpoints_kept=args.checkpoints_kept, flags=vars(args),
                            first_epoch=first_tick)
        log(f"phase {index + 1}: {phase_name(level, kind)}, batch {batch}, {length} images in {ticks} ticks of "
            f"{steps * batch}" + (f" (from image {done})" if done else ""))
        fit_gan(phase, run, schedule, self.strategy, count, take, sample=lambda: self._picture(phase.sampler),
                render=lambda picture: picture, resumed_at=first_tick + done // (steps * batch))
        self.next_tick = first_tick + ticks
        if growth.stopped:
            where = "the end of " if growth.done >= ticks * steps * batch else ""
            log(f"stopped after {growth.total} images (--stop-after-images) at {where}{phase_name(level, kind)}, alpha "
                f"{growth.alpha():.3f}; --resume goes on")
            return None
        return {"phase": name, "seconds": growth.seconds}

    def _phase_end(self, phase, index, level, kind, name, tick, images, seconds, cpu_seconds) -> None:
        """The phase's last grid, its models (saved only here: every tick would cost ~0.5 s, a tick at 4x4 is ~2 s)
        and its phases.json record."""
        import tensorflow as tf

        from common.checkpoints import explain_write_failure, save_model
        from common.images import save_png

        run = self.run
        picture = self._picture(phase.sampler)
        self.final_grid = save_png(run.samples / f"{name}.png", picture)
        last_checkpoint = tf.train.latest_checkpoint(str(run.checkpoints))
        with explain_write_failure(run, f"the models of phase {name}", last_checkpoint):
            for model_name, model in phase.phase_models().items():
                save_model(model, run.model_path(model_name))
        self.writer.image("samples/phase_end", picture, step=tick)
        self.writer.image(f"samples/{name}", picture, step=tick)
        self._record_phase(index, level, kind, images, seconds, cpu_seconds)
        self.log(f"phase {index + 1} done in {seconds:.1f} s: {self.final_grid}")

    def _length(self, level: int, kind: str) -> int:
        from chapters.pgan.models import resolution

        return phase_images(self.args, kind, resolution(level))

    def _checkpoint(self, items: dict, number: int) -> None:
        from common.checkpoints import Checkpoints, explain_write_failure

        checkpoints = Checkpoints(self.run, items, keep=self.args.checkpoints_kept)
        with explain_write_failure(self.run, f"checkpoint {number}", checkpoints.latest):
            checkpoints.save(number)

    def _picture(self, generator):
        """A grid of the fixed latents' images, each enlarged (nearest neighbour) to at least 32 pixels."""
        import numpy as np

        from common.images import make_grid

        images = np.asarray(generator(self.latents[:64], training=False))
        scale = max(1, 32 // images.shape[1])
        return make_grid(images.repeat(scale, axis=1).repeat(scale, axis=2), columns=8)

    def _fade_strip(self, level: int, alpha: float, tick: int) -> None:
        """Rows for the same 8 latents: the upsampled low-resolution path, the new block's path, their blend."""
        import numpy as np

        from chapters.pgan import models
        from common.images import make_grid, save_png

        low, new, blend = (np.asarray(t) for t in self.sampler.fade_paths(level)(self.latents[:8], training=False))
        rows = np.concatenate([low, new, blend])
        scale = max(1, 64 // rows.shape[1])
        picture = make_grid(rows.repeat(scale, axis=1).repeat(scale, axis=2), columns=8)
        res = models.resolution(level)
        path = save_png(self.run.samples / f"{res}x{res}_fade_strip_alpha{alpha:.2f}.png", picture)
        self.writer.image(f"fade/{res}x{res}_low_new_blend", picture, step=tick)
        self.log(f"  fade-in strip (rows: low-res path, new block, blend at alpha {alpha:.2f}): {path}")

    def _record_phase(self, index, level, kind, length, seconds, cpu_seconds) -> None:
        import json

        from chapters.pgan import models

        path = self.run.root / "phases.json"
        record = json.loads(path.read_text()) if path.exists() else {"phases": []}
        entries = [p for p in record["phases"] if p["index"] != index]
        entries.append({"index": index, "resolution": models.resolution(level), "phase": kind, "images": length,
                        "seconds": round(seconds, 2), "images_per_second": round(length / max(seconds, 1e-9), 1),
                        # CPU time of this process (all threads), this session's share of the phase: on a shared
                        # machine a better measure of the work than the wall time
                        "cpu_seconds_this_session": round(cpu_seconds, 2)})
        record["phases"] = sorted(entries, key=lambda p: p["index"])
        record["total_images"] = int(self.progress.total_images.numpy())
        record["total_seconds"] = round(sum(p["seconds"] for p in record["phases"]), 2)
        self.run.write_json(path, record)
