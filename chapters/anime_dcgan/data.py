"""The anime DCGAN's images: the --data folder or the embedded procedural faces, for training and for scoring,
and the feature network the scores use."""
from __future__ import annotations

from common.errors import UserError

FACES_SEED = 0  # the embedded training set is make_dataset(--faces, FACES_SEED, --image-size)


def training_data(args):
    """(number of images, take(index)) for the training stream: the --data folder or the embedded faces."""
    import tensorflow as tf

    from common.data import in_memory
    from common.data.images import image_folder

    if args.data:
        return image_folder(args.data, args.image_size)
    faces = embedded_faces(args.faces, args.image_size)
    print(f"{len(faces)} procedural faces at {args.image_size}x{args.image_size} (datasets/procedural_faces.py, "
          f"seed {FACES_SEED})")
    return len(faces), in_memory({"real": faces}, lambda row: {"real": tf.cast(row["real"], tf.float32) / 127.5 - 1.0})


def embedded_faces(count: int, size: int):
    """The embedded training set as uint8 (count, size, size, 3): the same faces for the same count and size."""
    import numpy as np

    from datasets.procedural_faces import make_dataset

    if count < 1:
        raise UserError(f"--faces must be at least 1, got {count}")
    images, _ages, _classes = make_dataset(count, FACES_SEED, size)
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def real_images(data, size: int, count: int, seed: int, faces: int):
    """Up to `count` training images in [-1, 1] at `size`, for scoring."""
    import numpy as np
    import tensorflow as tf

    from common.data.images import decode_image, find_images, usable_images

    if not data:
        chosen = embedded_faces(faces, size)
        return chosen.astype(np.float32) / 127.5 - 1.0
    paths = find_images(data)
    rng = np.random.default_rng(seed)
    paths = usable_images([paths[i] for i in np.sort(rng.permutation(len(paths))[:count])])
    images = []
    for path in paths:  # a file that passed the header check can still fail to decode (truncated)
        try:
            images.append(decode_image(tf.constant(str(path)), size).numpy())
        except tf.errors.OpError as error:
            print(f"skipped {path.name}: {error.message.splitlines()[0]}")
    if not images:
        raise UserError(f"--data {data}: none of the {len(paths)} images picked for scoring could be decoded")
    return np.stack(images)


def extractor(args):
    """The feature network for FID/KID/IS, as --extractor asks; `auto` says in one line what it chose."""
    from common.metrics import choose_extractor, faces_extractor

    return choose_extractor(args.extractor, args.inception_weights, faces_extractor)
