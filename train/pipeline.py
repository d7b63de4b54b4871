"""tf.data pipelines over the decoded-image caches.

The centre-crop cache holds every image exactly as the device preprocesses it
(decoded by ``load_image``'s decoder, resized by ``resize_image``), as uint8.
Evaluation batches are gathered from it (a memmap: the page cache keeps it in
RAM when it fits) and turned into float32 0..255: bit for bit the device's
input. Training batches are random crops of the whole photos
(:func:`make_crop_dataset`, see ``crops.py``), or, with ``--augment crop=0``,
the centre crops through Keras' random layers (:func:`make_dataset`).
"""

from __future__ import annotations

import numpy as np

from .config import Augment


def make_augmenter(augment: Augment, seed: int):
    """A Keras Sequential of random layers over float32 0..255 batches, or ``None``."""
    if not augment.enabled:
        return None
    import keras
    from keras import layers

    steps = []
    if augment.flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed))
    if augment.rotation:
        steps.append(layers.RandomRotation(augment.rotation, fill_mode="reflect", seed=seed + 1))
    if augment.zoom:
        steps.append(layers.RandomZoom(augment.zoom, fill_mode="reflect", seed=seed + 2))
    if augment.brightness:
        steps.append(layers.RandomBrightness(augment.brightness, value_range=(0, 255), seed=seed + 3))
    if augment.contrast:
        steps.append(layers.RandomContrast(augment.contrast, value_range=(0, 255), seed=seed + 4))
    return keras.Sequential(steps, name="augment") if steps else None


def make_dataset(
    images: np.ndarray,
    indices: list[int] | np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: Augment | None = None,
    sample_weights: np.ndarray | None = None,
    seed: int = 0,
    one_hot: bool = True,
):
    """Batches ``(x float32 0..255, y[, w])`` for the rows ``indices`` of ``images``.

    ``labels`` (and ``sample_weights``) are per row of ``images``. With
    ``one_hot`` the targets are one-hot (label smoothing needs them).
    """
    import tensorflow as tf

    indices = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    weights = None if sample_weights is None else np.asarray(sample_weights, dtype=np.float32)
    size = images.shape[1:]

    def gather(positions: np.ndarray):
        rows = indices[positions]
        # Reading a memmap in ascending order is sequential I/O; the batch order is
        # already random, so sorting within a batch costs nothing in randomness.
        rows.sort()
        x = np.asarray(images[rows])
        y = labels[rows]
        w = weights[rows] if weights is not None else np.ones(len(rows), np.float32)
        return x, y, w

    ds = tf.data.Dataset.range(len(indices))
    if shuffle:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def load(positions):
        x, y, w = tf.numpy_function(gather, [positions], (tf.uint8, tf.int64, tf.float32), stateful=False)
        x = tf.cast(tf.ensure_shape(x, (None, *size)), tf.float32)
        y = tf.ensure_shape(y, (None,))
        y = tf.one_hot(y, num_classes) if one_hot else y
        return x, y, tf.ensure_shape(w, (None,))

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    augmenter = make_augmenter(augment, seed) if augment is not None else None
    if augmenter is not None:
        ds = ds.map(
            lambda x, y, w: (tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0), y, w),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if sample_weights is None:
        ds = ds.map(lambda x, y, w: (x, y))
    return ds.prefetch(tf.data.AUTOTUNE)


def make_crop_dataset(
    photos,
    indices: list[int] | np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    size: int,
    augment: Augment,
    *,
    seed: int,
    epochs: int,
    initial_epoch: int = 0,
    sample_weights: np.ndarray | None = None,
):
    """Training batches ``(x float32 0..255, y one-hot[, w])`` of random crops, for epochs ``initial_epoch..epochs``.

    ``photos`` is a :class:`~edgeclass.train.crops.WholePhotos`. The dataset
    runs through every remaining epoch (``steps_per_epoch`` batches each, see
    :func:`steps_per_epoch`): each epoch's order and every crop depend on
    (seed, epoch, photo) only, so a resumed run sees what an uninterrupted
    one would have.
    """
    import tensorflow as tf

    from .crops import crop_batch, epoch_order

    indices = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    weights = None if sample_weights is None else np.asarray(sample_weights, dtype=np.float32)
    steps = steps_per_epoch(len(indices), batch_size)
    orders: dict[int, np.ndarray] = {}

    def batch(number: np.int64):
        epoch, step = divmod(int(number), steps)
        order = orders.get(epoch)
        if order is None:
            orders.clear()  # one epoch at a time: keep only the current order
            order = orders[epoch] = epoch_order(len(indices), seed, epoch)
        rows = indices[order[step * batch_size : (step + 1) * batch_size]]
        x = crop_batch(photos, rows, size, seed, epoch, min_scale=augment.crop, flip=augment.flip,
                       brightness=augment.brightness, contrast=augment.contrast)
        w = weights[rows] if weights is not None else np.ones(len(rows), np.float32)
        return x, labels[rows], w

    def load(number):
        x, y, w = tf.numpy_function(batch, [number], (tf.float32, tf.int64, tf.float32), stateful=False)
        x = tf.ensure_shape(x, (None, size, size, 3))
        y = tf.one_hot(tf.ensure_shape(y, (None,)), num_classes)
        return x, y, tf.ensure_shape(w, (None,))

    ds = tf.data.Dataset.range(initial_epoch * steps, epochs * steps)
    # Parallel calls keep both cores cropping while the model trains; the map is ordered.
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment.rotation or augment.zoom:
        extra = make_augmenter(Augment(flip=False, rotation=augment.rotation, zoom=augment.zoom, brightness=0.0,
                                       contrast=0.0, crop=0.0), seed)
        ds = ds.map(lambda x, y, w: (tf.clip_by_value(extra(x, training=True), 0.0, 255.0), y, w),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if sample_weights is None:
        ds = ds.map(lambda x, y, w: (x, y))
    return ds.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Batches in one pass over ``images`` (the last one may be short)."""
    return -(-images // batch_size)
