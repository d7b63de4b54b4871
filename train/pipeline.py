"""tf.data pipelines over the decoded-image cache.

The cache holds every image exactly as the device preprocesses it (decoded by
``load_image``'s decoder, resized by ``resize_image``), as uint8. Batches are
gathered from it (a memmap: the page cache keeps it in RAM when it fits),
turned into float32 0..255, augmented for training only, and prefetched.
Without augmentation a batch is bit-for-bit the device's input.
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
    return keras.Sequential(steps, name="augment")


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
