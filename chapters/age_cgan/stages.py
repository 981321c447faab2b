"""Age-cGAN's stages behind chapters/age_cgan/main.py (gan, encoder, optimize, age, evaluate), each reading the
models the previous one saved in the run folder, and the per-photo latent refinement of the age stage."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from common import seeds
from common.cli import PYTHON
from common.errors import UserError

# --precision auto keeps float32 on a CPU until bfloat16's results are measured for this chapter (README).
BF16_ON_CPU = False

FR_SIZE_IRV2 = 192  # the book resizes faces to 192x192 for InceptionResNetV2
# What each stage writes, and the stage that writes it.
MADE_BY = {"generator": "gan", "encoder": "encoder", "encoder_optimized": "optimize"}


class Stages:
    """One method per stage (gan, encoder, optimize, age, evaluate) on one run folder; later stages load what
    earlier ones saved and refuse, in one sentence, to run before them. `args`: the run's settled flags
    (common.cli.frozen_flags)."""

    def __init__(self, args: Any, run) -> None:
        import keras

        self.args, self.run = args, run
        # args holds the run's width, data and number of faces (main.py: common.run.use_saved_flags); the seed
        # typed for a later stage draws its latents, and the faces the GAN trained on are the training seed's
        self.width, self.data, self.num_faces = float(args.width), args.data, int(args.num_faces)
        self.train_seed = int(run.read_config().get("seed", args.seed))
        self._cache: dict = {}
        keras.utils.set_random_seed(args.seed)

    # --- helpers ----------------------------------------------------------------------------------
    def command(self, stage: str) -> str:
        return f"{PYTHON} chapters/age_cgan/main.py --stage {stage} --run-dir {self.run}"

    def load(self, name: str):
        import chapters.age_cgan.models  # noqa: F401  (registers TileLabels and Projection for safe-mode loading)
        from common.checkpoints import load_model

        path = self.run.model_path(name)
        if not path.exists():
            raise UserError(f"{path} does not exist; run the {MADE_BY[name]} stage first: {self.command(MADE_BY[name])}")
        return load_model(path, f"run {self.command(MADE_BY[name])}")

    def wiki(self):
        if "wiki" not in self._cache:
            from chapters.age_cgan.data import find_wiki

            self._cache["wiki"] = find_wiki(self.data)
        return self._cache["wiki"]

    def real_faces(self, count: int, seed: int):
        """(images in [-1, 1], classes): wiki faces from disk, or embedded faces of identities the GAN saw."""
        from chapters.age_cgan.data import embedded_faces, wiki_sample

        if self.data:
            return wiki_sample(self.wiki(), count, seed)
        images, classes = embedded_faces(self.num_faces, self.train_seed)
        pick = np.random.default_rng(seed).permutation(len(images))[:count]
        return images[pick].astype("float32") / 127.5 - 1.0, classes[pick]

    def held_out_faces(self, count: int):
        """Faces of identities the GAN never saw (embedded), or random wiki faces."""
        from chapters.age_cgan.data import embedded_faces, wiki_sample

        if self.data:
            return wiki_sample(self.wiki(), count, self.args.seed + seeds.HELD_OUT_WIKI)
        images, classes = embedded_faces(count, self.train_seed + seeds.HELD_OUT_IDENTITIES)
        return images.astype("float32") / 127.5 - 1.0, classes

    def strategy(self):
        """The process's one distribution strategy (--strategy, --precision), made by the first stage that trains:
        --stage all runs the GAN, encoder and optimize stages under the same one."""
        if "strategy" not in self._cache:
            from common.devices import precision_of, setup_devices

            self._cache["strategy"] = setup_devices(self.args.strategy, precision_of(self.args), self.args.seed,
                                                    bf16_on_cpu=BF16_ON_CPU)
        return self._cache["strategy"]

    def fr_model(self):
        if "fr" not in self._cache:
            self._cache["fr"] = face_recognition(self.args.fr_model, self.args.fr_weights)
        return self._cache["fr"]

    # --- stages ------------------------------------------------------------------------------------
    def gan(self) -> None:
        import tensorflow as tf

        from chapters.age_cgan import models
        from chapters.age_cgan.data import NUM_CLASSES, embedded_faces, wiki_take
        from common.data import in_memory
        from common.gan import ConditionalGAN
        from common.images import make_grid
        from common.train import Schedule, fixed_latents, fit_gan

        args = self.args
        strategy = self.strategy()
        if self.data:
            index = self.wiki()
            take, count = wiki_take(index), len(index.paths)
        else:
            images, classes = embedded_faces(self.num_faces, self.train_seed)
            print(f"embedded procedural faces: {len(images)} (per age class {np.bincount(classes).tolist()})")

            def to_float(row):
                return {"real": tf.cast(row["real"], tf.float32) / 127.5 - 1.0,
                        "labels": tf.one_hot(row["labels"], NUM_CLASSES)}

            take, count = in_memory({"real": images, "labels": classes.astype("int32")}, to_float), len(images)
        from common.stabilize import Stabilizers

        loss = args.loss or ("hinge" if args.arch == "dcgan" else "bce")
        with strategy.scope():
            if args.arch == "dcgan":
                generator = models.build_dcgan_generator(filters=args.filters)
                discriminator = models.build_projection_discriminator(filters=args.filters)
            else:
                generator = models.build_generator(width=self.width)
                discriminator = models.build_discriminator(width=self.width)
            # 0.996: what the measured default averaged (the old warm-up held "0.999" near 0.996 over 2,400 steps)
            ema = args.ema if args.ema is not None else (0.996 if args.arch == "dcgan" else 0.0)
            if not 0 <= ema < 1:
                raise UserError(f"--ema must be in [0, 1), got {ema}")
            # the average of G's weights (common/ema.py) is what the grids show and generator.keras holds
            options = Stabilizers(loss=loss, average_generator=ema)
            age_weight = args.age_weight if args.age_weight is not None else (0.1 if args.arch == "dcgan" else 0.0)
            if age_weight and args.arch != "dcgan":
                raise UserError("--age-weight needs --arch dcgan (its projection discriminator holds the age vectors)")
            if age_weight:
                gan = models.AuxiliaryAgeGAN(generator, discriminator, models.LATENT_DIM, NUM_CLASSES, age_weight,
                                             options=options)
            else:
                gan = ConditionalGAN(generator, discriminator, models.LATENT_DIM, NUM_CLASSES, options=options)
            gan.compile(d_optimizer=models.optimizer(args.lr), g_optimizer=models.optimizer(args.lr),
                        jit_compile=args.xla)
        z = np.repeat(fixed_latents(8, models.LATENT_DIM, args.seed), NUM_CLASSES, axis=0)
        ages = np.tile(np.eye(NUM_CLASSES, dtype="float32"), (8, 1))
        fit_gan(gan, self.run, Schedule.from_args(args), strategy, count, take,
                sample=lambda: gan.saved_models()["generator"].predict([z, ages], batch_size=48, verbose=0),
                render=lambda images: make_grid(images, NUM_CLASSES))  # a row per z, a column per age

    def encoder(self) -> None:
        import keras

        from chapters.age_cgan import models
        from chapters.age_cgan.encoder_training import ENCODER_EPOCH_STEPS, EncoderTraining

        strategy = self.strategy()
        with strategy.scope():
            generator = self.load("generator")
            encoder = models.build_encoder(generator.inputs[0].shape[-1], width=self.width)
            trainer = EncoderTraining(encoder, generator, self.args.pixel_weight)
            # the book: encoder.compile(loss=euclidean_distance_loss, optimizer="adam"), i.e. Keras' default Adam
            trainer.compile(e_optimizer=keras.optimizers.Adam(1e-3), jit_compile=self.args.xla)
        last = self.fit_stage(trainer, "encoder", self.args.encoder_steps, ENCODER_EPOCH_STEPS, None, 0)
        if last:
            self.record({"encoder_final_latent_error": last["latent_error"],
                         "encoder_final_pixel_error": last["pixel_error"]})

    def fit_stage(self, trainer, stage: str, total_steps: int, epoch_steps: int, take, count: int) -> dict:
        """Trains the encoder `stage` through common.train.fit_gan in <run>/<stage> (checkpoints, history, the
        reconstruction grids x over G(E(x), y_x) of each epoch), its model saved beside the GAN's.

        The stage's epochs are `epoch_steps` long (fewer when `total_steps` is smaller), kept in
        <run>/<stage>/epoch.json so that a resume with another --<stage>-steps keeps the epoch it started with
        (a step count resumes exactly only in epochs of one size); the steps are rounded up to whole epochs."""
        import dataclasses
        import json

        from common.checkpoints import checkpoint_candidates
        from common.devices import replicas_dividing
        from common.train import Schedule, fit_gan

        phase, flag = self.run.phase(stage, models_here=False), f"--{stage}-steps"
        resume = bool(self.args.resume) and bool(checkpoint_candidates(phase.checkpoints))
        record = phase.root / "epoch.json"
        if resume and record.exists():
            epoch_steps = int(json.loads(record.read_text())["steps_per_epoch"])
        else:
            epoch_steps = min(epoch_steps, total_steps)
            phase.write_json(record, {"steps_per_epoch": epoch_steps})
        epochs = -(-total_steps // epoch_steps)
        if epochs * epoch_steps != total_steps:
            print(f"{flag} {total_steps}: the {stage} stage runs in epochs of {epoch_steps} steps (a checkpoint "
                  f"each), so it trains {epochs * epoch_steps} steps")
        batch, flag_of_batch = ((self.args.batch_size, "--batch-size") if stage == "encoder" else
                                (self.args.optimize_batch, "--optimize-batch"))
        replicas_dividing(self.strategy(), batch, flag_of_batch)
        schedule = dataclasses.replace(
            Schedule.from_args(self.args), epochs=epochs, batch_size=batch, steps_per_epoch=epoch_steps,
            resume=resume, finished=f"the {stage} stage of {{run}} has already trained {{steps}} steps; pass "
                                    f"{flag} N (N > {{steps}}) to go on")
        return fit_gan(trainer, phase, schedule, self.strategy(), count, take,
                       sample=lambda: self.reconstructions(trainer.encoder, trainer.generator),
                       render=lambda picture: picture)

    def reconstructions(self, encoder, generator):
        """8 held-out faces over their reconstructions G(E(x), y_x): a picture for TensorBoard."""
        from chapters.age_cgan.data import NUM_CLASSES
        from common.images import make_grid

        if "recon" not in self._cache:
            self._cache["recon"] = self.held_out_faces(8)
        x, classes = self._cache["recon"]
        rebuilt = generator.predict([encoder.predict(x, verbose=0), np.eye(NUM_CLASSES, dtype="float32")[classes]],
                                    verbose=0)
        return make_grid(np.concatenate([x, rebuilt]), columns=8)

    def optimize(self) -> None:
        import csv

        from chapters.age_cgan import models
        from chapters.age_cgan.data import NUM_CLASSES
        from chapters.age_cgan.encoder_training import OPTIMIZE_EPOCH_STEPS, EncoderOptimization
        from common.data import in_memory

        strategy = self.strategy()
        with strategy.scope():
            encoder, generator = self.load("encoder"), self.load("generator")  # the direct prerequisite first
            trainer = EncoderOptimization(encoder, generator, self.fr_model(), self.args.pixel_weight)
            # the book's adversarial optimizer: Adam(2e-4, beta_1=0.5, epsilon=1e-7)
            trainer.compile(e_optimizer=models.optimizer(), jit_compile=self.args.xla)
        images, classes = self.real_faces(max(self.args.optimize_batch * 20, 256),
                                          self.args.seed + seeds.OPTIMIZE_FACES)
        faces = {"x": images, "labels": np.eye(NUM_CLASSES, dtype="float32")[classes],
                 "target": self.fr_model().predict(images, batch_size=32, verbose=0).astype("float32")}
        last = self.fit_stage(trainer, "optimize", self.args.optimize_steps, OPTIMIZE_EPOCH_STEPS,
                              in_memory(faces), len(images))
        if last:
            with open(self.run.root / "optimize" / "history.csv", newline="") as history:
                first = next(csv.DictReader(history))  # the first epoch's mean, before the fine-tuning moved E
            self.record({"optimize_fr_distance_first": float(first["fr_distance"]),
                         "optimize_fr_distance_last": last["fr_distance"]})

    def age(self, image_path: str | None = None) -> None:
        from chapters.age_cgan.data import BUCKET_NAMES, NUM_CLASSES, load_photo
        from common.images import make_grid, save_png
        from common.run import output_file

        out = None
        if self.args.out:  # never over the photo itself, nor an existing file without --overwrite
            out = output_file(self.args.out, self.args.overwrite, inputs=[image_path or self.args.image])
        encoder, generator = self.load("encoder_optimized"), self.load("generator")
        classes = None  # a photo's age is not known: encode_and_refine picks the closest
        if image_path is None and self.args.image is None:  # --stage all: one embedded face the GAN never saw
            face, classes = self.held_out_faces(1)
            image_path = str(save_png(self.run.samples / "input_face.png", make_grid(face, pad=0)))
        x = load_photo(image_path or self.args.image, crop=not self.args.no_crop)
        refined = encode_and_refine(encoder, generator, self.fr_model(), x, self.args.refine_steps,
                                    self.args.refine_lr, self.args.pixel_weight, classes)
        aged = generator.predict([np.repeat(refined.z, NUM_CLASSES, 0), np.eye(NUM_CLASSES, dtype="float32")],
                                 verbose=0)
        out = out or self.run.samples / f"age_{Path(image_path or self.args.image).stem}.png"
        save_png(out, make_grid(np.concatenate([x, aged]), columns=NUM_CLASSES + 1))
        note = f", {refined.after[0]:.3f} after {self.args.refine_steps} refinement steps" if self.args.refine_steps else ""
        print(f"FR distance of the input to its reconstruction at age {BUCKET_NAMES[refined.classes[0]]}: "
              f"{refined.before[0]:.3f} from the encoder{note}")
        print(f"wrote {out}: the input, then ages 0-18, 19-29, 30-39, 40-49, 50-59, 60+")

    def evaluate(self) -> None:
        """The figures of the issue (chapters/age_cgan/evaluation.py), on faces the GAN never saw."""
        import json

        from chapters.age_cgan import evaluation as ev
        from chapters.age_cgan.data import BUCKET_NAMES, NUM_CLASSES, people_at_six_ages
        from common.evaluate import write_scores
        from common.metrics import faces_extractor, fid

        args = self.args
        encoder, generator = self.load("encoder_optimized"), self.load("generator")
        classify, how = self.age_estimator()
        fr = self.fr_model()
        latent = generator.inputs[0].shape[-1]
        results = {"age_estimator": how, "fr_model": args.fr_model, "eval_samples_per_class": args.eval_samples}
        started = time.time()

        real, real_classes = self.held_out_faces(NUM_CLASSES * args.eval_samples)
        results.update(ev.age_accuracy_real(classify, real, real_classes, BUCKET_NAMES))
        fake, fake_classes = ev.generated_by_age(
            lambda z, y: generator.predict([z, y], batch_size=250, verbose=0), args.eval_samples, latent,
            NUM_CLASSES, args.seed + seeds.EVAL_LATENTS)
        results.update(ev.age_accuracy_generated(classify, fake, fake_classes, BUCKET_NAMES))
        extractor = faces_extractor()
        results["fid_faces_cnn"] = fid(extractor.features(real), extractor.features(fake))
        print(f"[evaluate] age accuracy and FID in {time.time() - started:.0f} s")

        embed = lambda images: fr.predict(images, batch_size=32, verbose=0)  # noqa: E731
        people = min(args.eval_identities, args.eval_samples)
        per_person = fake.reshape(NUM_CLASSES, args.eval_samples, *fake.shape[1:])[:, :people].swapaxes(0, 1)
        generated_identity = ev.identity_ratio(embed, per_person)
        results["identity_ratio"] = generated_identity["ratio"]
        results["identity_distances"] = generated_identity
        if not self.data:  # one procedural identity at six ages (IMDB-WIKI has no such pairs)
            six_ages = people_at_six_ages(people, self.train_seed + seeds.SIX_AGES_IDENTITIES)
            real_identity = ev.identity_ratio(embed, six_ages)
            results["identity_ratio_real"] = real_identity["ratio"]
            results["identity_distances_real"] = real_identity
        print(f"[evaluate] identity ratios in {time.time() - started:.0f} s")

        steps = args.refine_steps or 30
        x, x_classes = self.held_out_faces(args.eval_faces)
        refined = encode_and_refine(encoder, generator, fr, x, steps, args.refine_lr, args.pixel_weight, x_classes)
        before, after = refined.before, refined.after
        results.update({"refine_steps": steps, "refine_faces": len(x),
                        "reconstruction_fr_distance_encoder": float(np.mean(before)),
                        "reconstruction_fr_distance_refined": float(np.mean(after)),
                        "refine_gain": float(np.mean(after) / np.mean(before))})
        results["targets"] = ev.targets(results)
        # the figures (the float results) in the table every chapter's evaluate prints; the settings (ints, names),
        # per-class and per-distance details and the targets beside them in metrics.json, with what the earlier
        # stages recorded there
        scores = {k: float(v) for k, v in results.items() if isinstance(v, (float, np.floating))}
        earlier = json.loads(self.run.metrics_file.read_text()) if self.run.metrics_file.exists() else {}
        earlier = {k: v for k, v in earlier.items() if k != "metrics" and k not in scores}  # an older evaluate's
        epoch = self.run.epochs_trained()
        write_scores(self.run, scores, epoch, f"epoch {epoch}, {how}", started,
                     {**earlier, **{k: v for k, v in results.items() if k not in scores}})
        print("age_accuracy_real per class: " + ", ".join(
            f"{k} {v:.2f}" for k, v in results["age_accuracy_real_per_class"].items() if v is not None))
        print("age_accuracy_generated per class: " + ", ".join(
            f"{k} {v:.2f}" for k, v in results["age_accuracy_generated_per_class"].items()) + "; class read per y: "
            + ", ".join(f"{v:.2f}" for v in results["age_class_read_generated"].values()))
        print(f"identity distances: same z {generated_identity['same_person']:.3f} / two z "
              f"{generated_identity['different_people']:.3f}; refinement: FR distance of G(E(x), y_x) to x "
              f"{np.mean(before):.3f} -> {np.mean(after):.3f} after {steps} steps, {len(x)} faces")
        for name, target in results["targets"].items():
            print(f"target {name} {target['target']}: {'met' if target['met'] else 'MISSED'}")

    def age_estimator(self):
        """-> (images -> class indices, description): face-api's age net on real faces, else the classifier."""
        from chapters.age_cgan.data import age_to_class

        if self.data:
            from chapters.age_cgan.face_nets import age_model

            net = age_model()
            return (lambda images: age_to_class(net.predict(images, batch_size=32, verbose=0)["age"][:, 0]),
                    "face-api age network (years -> age class)")
        from common.checkpoints import load_model

        path = Path(self.args.age_classifier)
        net = load_model(path, "make it with python chapters/age_cgan/train_age_classifier.py")
        return (lambda images: np.argmax(net.predict(images, batch_size=64, verbose=0), -1),
                f"procedural age classifier {path.name}")

    def record(self, values: dict) -> None:
        import json

        metrics = json.loads(self.run.metrics_file.read_text()) if self.run.metrics_file.exists() else {}
        metrics.update(values)
        self.run.write_json(self.run.metrics_file, metrics)


def encode_and_refine(encoder, generator, fr, x, steps: int, lr: float, pixel_weight: float, classes=None
                      ) -> "Refined":
    """z = E(x), then `steps` of Adam on z so that the reconstruction G(z, y_x) is the face x.

    The loss per face is the FR distance between x and G(z, y_x) (who it is: the paper's identity-preserving
    optimisation, done per image on z) plus `pixel_weight` x their mean absolute pixel difference (what a
    face-recognition net is built to ignore: colours, hair, glasses, background). y_x is each face's own age
    class (`classes`) or, for a photo of unknown age, the class whose reconstruction G(E(x), y) starts closest.
    Only the reconstruction is optimised, so the other five ages stay free to age.
    """
    import keras
    import tensorflow as tf

    from chapters.age_cgan.data import NUM_CLASSES
    from chapters.age_cgan.encoder_training import euclidean

    eye = np.eye(NUM_CLASSES, dtype="float32")
    x = tf.constant(x, tf.float32)
    target = fr(x, training=False)
    z0 = encoder.predict(x, batch_size=64, verbose=0)

    def losses(z, labels):
        rebuilt = generator([z, labels], training=False)
        identity = euclidean(fr(rebuilt, training=False), target)
        return identity, identity + pixel_weight * tf.reduce_mean(tf.abs(tf.cast(rebuilt, tf.float32) - x), [1, 2, 3])

    if classes is None:
        start = [losses(tf.constant(z0), tf.constant(eye[[k] * len(z0)]))[1].numpy() for k in range(NUM_CLASSES)]
        classes = np.argmin(np.stack(start, axis=1), axis=1)
    labels = tf.constant(eye[np.asarray(classes)])
    before = losses(tf.constant(z0), labels)[0].numpy()
    z = tf.Variable(z0)
    optimizer = keras.optimizers.Adam(lr)
    optimizer.build([z])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(losses(z, labels)[1])  # faces are independent: the sum optimises each
        optimizer.apply_gradients([(tape.gradient(loss, z), z)])

    for _ in range(steps):
        step()
    after = losses(z, labels)[0].numpy() if steps else before
    return Refined(z.numpy(), before, after, np.asarray(classes))


class Refined(NamedTuple):
    """encode_and_refine's result: the refined z, FR distances of G(z, y_x) to x from E(x) and after, y_x."""

    z: np.ndarray
    before: np.ndarray
    after: np.ndarray
    classes: np.ndarray


def face_recognition(name: str, weights: str = "imagenet"):
    """The identity network: [-1, 1] faces of any size -> embeddings (resized inside the graph)."""
    import keras

    if name == "face-api":
        from chapters.age_cgan.face_nets import face_recognition_model

        return face_recognition_model()
    if name == "inception-resnet-v2":
        from common.pretrained import load_application

        base = load_application("InceptionResNetV2", weights, flag="--fr-weights", include_top=False,
                                pooling="avg", input_shape=(FR_SIZE_IRV2, FR_SIZE_IRV2, 3))
        image = keras.Input((None, None, 3), name="image")  # Inception's own preprocessing is [-1, 1] too
        return keras.Model(image, base(keras.layers.Resizing(FR_SIZE_IRV2, FR_SIZE_IRV2)(image)), name="fr_irv2")
    path = Path(name)
    if path.suffix != ".keras":
        raise UserError(f"--fr-model must be face-api, inception-resnet-v2 or a .keras file, got {name!r}")
    from common.checkpoints import load_model

    model = load_model(path, "pass a .keras model that maps [-1, 1] face images to embedding vectors")
    size = model.inputs[0].shape[1]
    if size is None:
        return model
    image = keras.Input((None, None, 3), name="image")
    return keras.Model(image, model(keras.layers.Resizing(size, model.inputs[0].shape[2])(image)), name="fr_custom")
