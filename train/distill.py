"""``edgeclass train --teacher RUN``: knowledge distillation from a finished run into this one.

The student's loss on a training batch is::

    (1 - A) * CE(labels, p)  +  A * T^2 * KL(teacher_T || p_T),     x_T = softmax(log(x) / T)

with ``A`` = ``--distill-weight``, ``T`` = ``--distill-temperature``, ``CE``
the cross-entropy with the configured label smoothing, and ``p`` the
student's softmax output. Both models end in a softmax, and
``softmax(log(softmax(z)) / T) == softmax(z / T)``, so the probabilities are
enough: no logits are needed. ``T^2`` keeps the soft term's gradients on the
scale of the hard term's whatever ``T`` is (Hinton et al., 2015).

Targets are ``concat(one-hot labels, teacher probabilities)``, so Keras'
standard ``fit`` (checkpoints, resume, early stopping) works unchanged; the
loss splits them again. Validation targets are the plain one-hot labels, for
which the same loss is the plain cross-entropy: ``val_loss`` (early stopping,
the best epoch) measures the student on the true labels, comparable with a
run without a teacher.

Where the teacher sees what:

* fine-tuning: inside the tf.data pipeline, on the very batch the student
  trains on (random crop, flip, colour jitter included), so the soft targets
  follow the augmentation; resized to the teacher's input size if it differs.
* head phase (cached frozen features of the centre crops): the teacher's
  predictions on the same centre crops, computed once before the head trains.

Refusals (one line each, before TensorFlow is imported where the split allows
it): a missing or unfinished teacher run, other labels, and a teacher whose
training split holds photos of this run's validation or test split, which
would let validation and test flatter the student with what the teacher
memorised.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclass.device.errors import EdgeclassError

from . import rundir
from .dataset import Layout, Record, scan
from .since import earlier_assignment
from .split import hashed_split, plan_split, split_point

log = logging.getLogger(__name__)

HELD_OUT = ("val", "test")


class TeacherError(EdgeclassError):
    """The ``--teacher`` run cannot teach this one."""


@dataclass(frozen=True)
class Teacher(rundir.TrainingDir):
    """A finished training directory used as the teacher, read without TensorFlow."""

    metrics: dict  # its report/metrics.json ({} when it has none)

    def summary(self) -> dict:
        """What ``config.json`` and the report record about the teacher."""
        gap = self.metrics.get("train_val_gap") or {}
        return {
            "path": str(self.path),
            "backbone": self.config.get("backbone"),
            "alpha": self.config.get("alpha"),
            "input_size": self.input_size,
            "val_accuracy": gap.get("val_accuracy"),
            "test_accuracy": self.metrics.get("accuracy"),
        }


def read_teacher(run: str | Path) -> Teacher:
    """Read a finished training directory; :class:`TeacherError` when it is missing or unfinished."""
    path = Path(run).expanduser().resolve()
    if not path.is_dir():
        raise TeacherError(f"--teacher {run}: no such training directory (train the teacher first: "
                           f"edgeclass train DATA -o {run})")
    if not (path / rundir.MODEL).is_file():
        hint = (f"finish it with 'edgeclass train --resume -o {run} DATA'" if (path / rundir.CONFIG).is_file()
                else "expected a directory written by 'edgeclass train'")
        raise TeacherError(f"--teacher {run}: unfinished training run (no {rundir.MODEL}); {hint}")
    try:
        found = rundir.load_training_dir(path)
    except EdgeclassError as exc:
        raise TeacherError(f"--teacher: {exc}") from None
    metrics_file = path / rundir.REPORT / "metrics.json"
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    except ValueError:
        metrics = {}  # only the summary's accuracies come from it
    return Teacher(path, found.config, found.labels, found.split, metrics if isinstance(metrics, dict) else {})


def check_labels(teacher: Teacher, labels: list[str] | tuple[str, ...]) -> None:
    """The teacher's outputs must be this run's classes, in the same order."""
    if tuple(labels) != teacher.labels:
        raise TeacherError(f"--teacher {teacher.path}: its labels ({', '.join(teacher.labels)}) differ from this "
                           f"dataset's ({', '.join(labels)}); a teacher must be trained on the same classes")


def teacher_training_photos(teacher: Teacher, records: list[Record], data_dir: Path) -> set[str]:
    """Content hashes of the teacher's training photos.

    Entries without a hash (runs older than hashed split.json files) are
    matched by path, which only means the same photo when both runs read the
    same dataset folder.
    """
    teacher_dir = Path(teacher.split.get("data_dir") or data_dir)
    same_dir = teacher_dir.resolve() == Path(data_dir).resolve()
    where = earlier_assignment(teacher.split, records if same_dir else [], teacher_dir)
    return {sha for sha, s in where.items() if s == "train"}


def held_out_leaks(teacher: Teacher, records: list[Record], split: dict[str, list[int]],
                   data_dir: Path) -> list[tuple[int, str]]:
    """``(record, split)`` for each of this run's validation and test photos that the teacher trained on."""
    seen = teacher_training_photos(teacher, records, data_dir)
    return [(i, s) for s in HELD_OUT for i in split.get(s, []) if records[i].sha256 in seen]


def refuse_leaks(teacher: Teacher, records: list[Record], split: dict[str, list[int]], data_dir: Path) -> None:
    """Stop when the teacher trained on a photo that this run validates or tests on."""
    leaks = held_out_leaks(teacher, records, split, data_dir)
    if not leaks:
        return
    i, s = leaks[0]
    seed = teacher.split.get("seed")
    raise TeacherError(
        f"--teacher {teacher.path}: {len(leaks)} photo(s) of this run's validation/test split were in the teacher's "
        f"training split, e.g. {records[i].item.rel} ({s} here); they would flatter the student: train the teacher "
        f"on this data with the same --seed and --split (it used --seed {seed}), or on data without them")


def check_teacher(run: str | Path, layout: Layout, ratios, seed: int, workers: int = 0,
                  earlier_doc: dict | None = None, resume: bool = False) -> Teacher:
    """Every teacher check that needs no TensorFlow; returns the teacher.

    The leakage check needs this run's split, which needs every photo
    decoded (near-duplicate groups). So first each photo's split is
    predicted from its content hash alone (cheap: no decoding); only when
    that prediction puts a photo the teacher trained on into validation or
    test is the real split computed here, and the run refused on it. The
    trainer checks the real split again after making it (a photo can still
    move into val or test with a new near-duplicate).
    """
    teacher = read_teacher(run)
    check_labels(teacher, layout.labels)
    if resume:
        return teacher  # checked when the run started; the split is fixed since
    hashed = scan(layout, workers=workers, description="hashing (teacher check)", decode=False)
    seen = teacher_training_photos(teacher, hashed, layout.data_dir)
    pinned = earlier_assignment(earlier_doc, hashed, layout.data_dir) if earlier_doc is not None else {}
    predicted = (pinned.get(r.sha256) or _predicted_split(layout, r, ratios, seed) for r in hashed if r.sha256 in seen)
    if not any(s in HELD_OUT for s in predicted):
        return teacher
    records = scan(layout, workers=workers, description="splitting (teacher check)")
    plan = plan_split(layout, records, ratios, seed, earlier_assignment(earlier_doc, records, layout.data_dir)
                      if earlier_doc is not None else None)
    refuse_leaks(teacher, records, plan.indices, layout.data_dir)
    return teacher


def _predicted_split(layout: Layout, record: Record, ratios, seed: int) -> str:
    """The split a photo's own hash gives it (``plan_split`` without near-duplicate groups and small-class moves)."""
    if not layout.presplit:
        return hashed_split(split_point(seed, record.sha256), ratios)
    if record.item.split != "train":
        return record.item.split
    missing = [s for s in HELD_OUT if s not in layout.split_dirs]
    if not missing:
        return "train"
    val = ratios[1] if "val" in missing else 0.0
    test = ratios[2] if "test" in missing else 0.0
    return hashed_split(split_point(seed, record.sha256), (1 - val - test, val, test))


# -- TensorFlow side -------------------------------------------------------------------------------------------

def load_teacher_model(teacher: Teacher, input_size: int):
    """The teacher's float model taking this run's input size (resized inside when the sizes differ)."""
    import keras

    model = keras.models.load_model(teacher.model_path, compile=False)
    model.trainable = False  # BatchNorm in inference mode, no gradients, whatever the caller's training flag
    if teacher.input_size == input_size:
        return model
    inputs = keras.Input((input_size, input_size, 3), name="student_pixels")
    # Bilinear with antialiasing: 0..255 pixels stay 0..255, and a downscale does not alias.
    x = keras.layers.Resizing(teacher.input_size, teacher.input_size, antialias=True, name="to_teacher_size")(inputs)
    return keras.Model(inputs, model(x, training=False), name="teacher")


def with_teacher(ds, teacher_model, num_classes: int):
    """Batches ``(x, y[, w])`` -> ``(x, concat(y, teacher(x))[, w])``: the teacher sees the student's batch ``x``."""
    import tensorflow as tf

    def add(x, y, *w):
        soft = tf.cast(teacher_model(x, training=False), y.dtype)
        return (x, tf.concat([y, soft], axis=-1), *w)

    return ds.map(add, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def distillation_loss(num_classes: int, weight: float, temperature: float, label_smoothing: float = 0.0):
    """The Keras loss of the module docstring.

    Targets of width ``2 * num_classes`` are ``concat(one-hot, teacher
    probabilities)``; targets of width ``num_classes`` (validation) give the
    plain label-smoothed cross-entropy.
    """
    import keras
    from keras import ops

    class DistillationLoss(keras.losses.Loss):
        def call(self, y_true, y_pred):
            y_pred = ops.cast(y_pred, "float32")
            labels = ops.cast(y_true[..., :num_classes], "float32")
            hard = keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=label_smoothing)
            if y_true.shape[-1] == num_classes:
                return hard
            eps = keras.config.epsilon()
            soft = ops.cast(y_true[..., num_classes:], "float32")
            log_student = ops.log_softmax(ops.log(ops.clip(y_pred, eps, 1.0)) / temperature, axis=-1)
            log_teacher = ops.log_softmax(ops.log(ops.clip(soft, eps, 1.0)) / temperature, axis=-1)
            kl = ops.sum(ops.exp(log_teacher) * (log_teacher - log_student), axis=-1)
            return (1.0 - weight) * hard + weight * temperature**2 * kl

    return DistillationLoss(name="distillation")


def label_accuracy(num_classes: int):
    """Accuracy against the true labels, the first ``num_classes`` columns of either kind of target."""
    import keras
    from keras import ops

    def accuracy(y_true, y_pred):
        same = ops.equal(ops.argmax(y_true[..., :num_classes], axis=-1), ops.argmax(y_pred, axis=-1))
        return ops.cast(same, "float32")

    return keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")


def soft_targets(teacher_model, images: np.ndarray, rows, batch_size: int) -> np.ndarray:
    """The teacher's probabilities on the cached centre crops ``images[rows]`` (the head phase's targets)."""
    from .progress import progress_bar

    rows = np.asarray(rows, dtype=np.int64)
    out = []
    with progress_bar("teacher (centre crops)", len(rows)) as advance:
        for start in range(0, len(rows), batch_size):
            batch = np.asarray(images[np.sort(rows[start : start + batch_size])], dtype=np.float32)
            order = np.argsort(np.argsort(rows[start : start + batch_size]))  # sorted for the memmap, then undone
            # A direct call, not predict_on_batch: one more traced predict function per batch shape
            # would set off TensorFlow's retracing warning for the run's own predictions.
            out.append(np.asarray(teacher_model(batch, training=False), dtype=np.float32)[order])
            advance(len(order))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
