"""``edgeclass train --teacher RUN``: the loss on known numbers, the teacher on the student's crops,
a real tiny teacher -> student run, and the refusals (before TensorFlow loads)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edgeclass.train import rundir  # noqa: E402
from edgeclass.train.config import Augment  # noqa: E402
from edgeclass.train.crops import WholePhotos, WholePhotoWriter  # noqa: E402
from edgeclass.train.dataset import discover, scan  # noqa: E402
from edgeclass.train.distill import (  # noqa: E402
    Teacher,
    distillation_loss,
    label_accuracy,
    load_teacher_model,
    with_teacher,
)
from edgeclass.train.pipeline import make_crop_dataset  # noqa: E402
from edgeclass.train.split import plan_split, split_json  # noqa: E402

from .conftest import CLASSES, invoke, make_tree, tiny_train_args  # noqa: E402

# Student probabilities p, teacher probabilities q, true class 0 of three.
P = np.array([[0.7, 0.2, 0.1]], np.float32)
Q = np.array([[0.5, 0.4, 0.1]], np.float32)
ONE_HOT = np.array([[1.0, 0.0, 0.0]], np.float32)


def _loss(weight, temperature, smoothing=0.0, targets=None) -> float:
    loss = distillation_loss(3, weight, temperature, smoothing)
    y = np.concatenate([ONE_HOT, Q], axis=1) if targets is None else targets
    return float(loss(y, P))


def test_loss_is_the_weighted_sum_of_cross_entropy_and_tempered_kl_on_known_numbers():
    import keras

    # A = 0: exactly Keras' cross-entropy, label smoothing included.
    plain = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    assert _loss(0.0, 2.0, 0.1) == pytest.approx(float(plain(ONE_HOT, P)), abs=1e-6)
    assert _loss(0.0, 2.0) == pytest.approx(-np.log(0.7), abs=1e-6)

    # A = 1, T = 2, by hand: p_T = softmax(log p / 2) = sqrt(p) / sum(sqrt(p)), the same for q.
    p_t = np.sqrt(P[0]) / np.sqrt(P[0]).sum()
    q_t = np.sqrt(Q[0]) / np.sqrt(Q[0]).sum()
    kl = float(np.sum(q_t * np.log(q_t / p_t)))
    # By hand: p_T = (0.5229, 0.2795, 0.1976), q_T = (0.4271, 0.3820, 0.1910),
    # KL = 0.4271 ln(0.4271/0.5229) + 0.3820 ln(0.3820/0.2795) + 0.1910 ln(0.1910/0.1976) = 0.02632.
    assert kl == pytest.approx(0.026323, abs=1e-5)
    assert _loss(1.0, 2.0) == pytest.approx(4 * kl, abs=1e-5)
    # T = 1: the plain KL(q || p).
    assert _loss(1.0, 1.0) == pytest.approx(float(np.sum(Q[0] * np.log(Q[0] / P[0]))), abs=1e-5)
    # In between: the weighted sum; and a student equal to its teacher pays the cross-entropy part only.
    assert _loss(0.3, 2.0) == pytest.approx(0.7 * -np.log(0.7) + 0.3 * 4 * kl, abs=1e-5)
    same = distillation_loss(3, 0.5, 2.0)(np.concatenate([ONE_HOT, P], axis=1), P)
    assert float(same) == pytest.approx(0.5 * -np.log(0.7), abs=1e-5)

    # Validation targets are the labels alone: the plain cross-entropy, whatever A and T.
    assert _loss(0.9, 4.0, 0.1, targets=ONE_HOT) == pytest.approx(float(plain(ONE_HOT, P)), abs=1e-6)


def test_accuracy_counts_the_true_labels_not_the_teacher():
    metric = label_accuracy(3)
    wrong_teacher = np.array([[1, 0, 0, 0, 0, 1], [0, 1, 0, 1, 0, 0]], np.float32)  # teacher disagrees
    metric.update_state(wrong_teacher, np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1]], np.float32))
    assert float(metric.result()) == 1.0


def _tiny_teacher(run: Path, input_size: int, labels=CLASSES) -> Teacher:
    """A small softmax model saved as a finished run's model.keras (only its predictions matter here)."""
    import keras

    inputs = keras.Input((input_size, input_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(len(labels), activation="softmax")(x))
    run.mkdir(parents=True)
    model.save(run / rundir.MODEL)
    return Teacher(run, {"input_size": input_size}, tuple(labels), {}, {})


@pytest.mark.parametrize("teacher_size, augment", [(64, Augment()), (48, Augment(crop=0.25, rotation=0.05))],
                         ids=["same-size", "resized-rotated"])
def test_teacher_sees_the_very_crops_the_student_trains_on(tree, tmp_path, teacher_size, augment):
    import tensorflow as tf

    layout = discover(tree)
    writer = WholePhotoWriter(tmp_path / "photos.bin", len(layout.items), 74)
    records = scan(layout, workers=2, whole=writer)
    writer.finish()
    photos = WholePhotos(tmp_path / "photos.bin")
    labels = np.array([CLASSES.index(r.item.label) for r in records])
    rows = list(range(0, len(records), 2))

    def crops():
        return make_crop_dataset(photos, rows, labels, 3, 4, 64, augment, seed=3, epochs=1)

    teacher = _tiny_teacher(tmp_path / "teacher", teacher_size)
    model = load_teacher_model(teacher, 64)
    plain = list(crops())
    taught = list(with_teacher(crops(), model, 3))
    assert len(taught) == len(plain) == 4
    import keras

    alone = keras.models.load_model(teacher.path / rundir.MODEL)
    for (x0, y0), (x, y) in zip(plain, taught):
        # The student's batch is untouched: the seeded numpy crops are the same as without a teacher
        # (Keras' random rotation draws anew in each dataset built, so that case is not compared) ...
        if not augment.rotation:
            np.testing.assert_array_equal(x.numpy(), x0.numpy())
        np.testing.assert_array_equal(y[:, :3].numpy(), y0.numpy())
        # ... and the soft targets are the teacher's output on that very batch, at the teacher's size.
        seen = x.numpy() if teacher_size == 64 else tf.image.resize(x, (teacher_size, teacher_size), antialias=True).numpy()
        np.testing.assert_allclose(y[:, 3:].numpy(), alone.predict(seen, verbose=0), atol=1e-5)
        np.testing.assert_allclose(y[:, 3:].numpy().sum(axis=1), 1.0, atol=1e-5)
