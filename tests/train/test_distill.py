"""``edgeclass train --teacher RUN``: the loss on known numbers, the teacher on the student's crops,
a real tiny teacher -> student run, and the refusals (before TensorFlow loads)."""

from __future__ import annotations

import hashlib
import json
import shutil
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

from .conftest import CLASSES, invoke, make_tree, probe, read_history, tiny_train_args  # noqa: E402

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

    # Class weights ride along as a third element (only in the same-size case, to cover both forms).
    weights = np.linspace(0.5, 2.0, len(records)).astype(np.float32) if teacher_size == 64 else None

    def crops():
        return make_crop_dataset(photos, rows, labels, 3, 4, 64, augment, seed=3, epochs=1, sample_weights=weights)

    teacher = _tiny_teacher(tmp_path / "teacher", teacher_size)
    model = load_teacher_model(teacher, 64)
    plain = list(crops())
    taught = list(with_teacher(crops(), model, 3))
    assert len(taught) == len(plain) == 4
    import keras

    alone = keras.models.load_model(teacher.path / rundir.MODEL)
    for (x0, y0, *w0), (x, y, *w) in zip(plain, taught):
        assert len(w) == len(w0) == (weights is not None)
        if w:
            np.testing.assert_array_equal(w[0].numpy(), w0[0].numpy())
        # The student's batch is untouched: the seeded numpy crops are the same as without a teacher
        # (Keras' random rotation draws anew in each dataset built, so that case is not compared) ...
        if not augment.rotation:
            np.testing.assert_array_equal(x.numpy(), x0.numpy())
        np.testing.assert_array_equal(y[:, :3].numpy(), y0.numpy())
        # ... and the soft targets are the teacher's output on that very batch, at the teacher's size.
        seen = x if teacher_size == 64 else tf.image.resize(x, (teacher_size, teacher_size), antialias=True)
        seen = seen.numpy()
        np.testing.assert_allclose(y[:, 3:].numpy(), alone.predict(seen, verbose=0), atol=1e-5)
        np.testing.assert_allclose(y[:, 3:].numpy().sum(axis=1), 1.0, atol=1e-5)


# -- real runs: the session's tiny training run (conftest ``trained``) is the teacher ---------------------------

@pytest.mark.slow
def test_student_trains_from_the_teacher_and_records_it(trained, tmp_path):
    data, teacher, _ = trained
    out = tmp_path / "student"
    # The teacher's own settings and seed: only --teacher differs, so any difference in the loss is distillation.
    result = invoke("train", data, "-o", out, *tiny_train_args(epochs=3), "--teacher", teacher,
                    "--distill-weight", "0.7", "--distill-temperature", "3")
    assert result.exit_code == 0, (result.output, result.exception)
    run = rundir.load_training_dir(out)
    teacher_metrics = json.loads((teacher / "report" / "metrics.json").read_text())
    assert run.config["teacher"] == {
        "path": str(teacher.resolve()), "backbone": "mobilenet_v2", "alpha": 0.35, "input_size": 64,
        "val_accuracy": teacher_metrics["train_val_gap"]["val_accuracy"], "test_accuracy": teacher_metrics["accuracy"]}
    assert (run.config["distill_weight"], run.config["distill_temperature"]) == (0.7, 3.0)
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["distillation"] == {"teacher": run.config["teacher"], "weight": 0.7, "temperature": 3.0}
    page = (out / "report" / "index.html").read_text()
    assert "Knowledge distilled from" in page and 'data-src="metrics:/distillation/weight"' in page
    assert "distilled from" in (out / "report" / "classification_report.txt").read_text()

    # Same seed, same features, same initial head: without a teacher the head's first epoch would
    # repeat the teacher run's loss exactly (a run is deterministic on the CPU).
    student, alone = read_history(out), read_history(teacher)
    assert student[0]["phase"] == alone[0]["phase"] == "head"
    assert float(student[0]["loss"]) != pytest.approx(float(alone[0]["loss"]), rel=1e-3)
    assert [h["phase"] for h in student].count("finetune") == 3


def _run_copy(teacher: Path, where: Path) -> Path:
    """A copy of a training directory without its report (smaller) to alter."""
    return Path(shutil.copytree(teacher, where, ignore=shutil.ignore_patterns("report", "logs", "checkpoints")))


@pytest.mark.slow
def test_refusals_name_the_teacher_and_the_fix_before_tensorflow_loads(trained, tmp_path):
    data, teacher, _ = trained
    # A teacher split with --seed 7: its split.json is what a run with that seed writes (the same code).
    seven = _run_copy(teacher, tmp_path / "seed7")
    layout = discover(data)
    records = scan(layout, workers=2)
    ratios = (0.8, 0.1, 0.1)
    theirs, ours = plan_split(layout, records, ratios, 7), plan_split(layout, records, ratios, 42)
    (seven / rundir.SPLIT).write_text(json.dumps(split_json(layout, records, theirs, ratios, 7)))
    config = json.loads((seven / rundir.CONFIG).read_text())
    (seven / rundir.CONFIG).write_text(json.dumps({**config, "seed": 7}))
    seen = {records[i].sha256 for i in theirs.indices["train"]}
    leaked = [(i, s) for s in ("val", "test") for i in ours.indices[s] if records[i].sha256 in seen]
    assert leaked, "the generated data no longer gives the two seeds overlapping splits"
    first, where = leaked[0]

    unfinished = _run_copy(teacher, tmp_path / "unfinished")
    (unfinished / rundir.MODEL).unlink()
    two = make_tree(tmp_path / "two", {"circles": 6, "squares": 6})
    out = tmp_path / "student"
    cases = {
        "held-out photos in the teacher's training split": (
            data, seven,
            f"error: --teacher {seven.resolve()}: {len(leaked)} photo(s) of this run's validation/test split were in "
            f"the teacher's training split, e.g. {records[first].item.rel} ({where} here); they would flatter the "
            "student: train the teacher on this data with the same --seed and --split (it used --seed 7), or on data "
            "without them"),
        "other labels": (
            two, teacher,
            f"error: --teacher {teacher.resolve()}: its labels (circles, squares, stripes) differ from this dataset's "
            "(circles, squares); a teacher must be trained on the same classes"),
        "unfinished": (
            data, unfinished,
            f"error: --teacher {unfinished}: unfinished training run (no model.keras); finish it with "
            f"'edgeclass train --resume -o {unfinished} DATA'"),
        "missing": (
            data, tmp_path / "nowhere",
            f"error: --teacher {tmp_path / 'nowhere'}: no such training directory (train the teacher first: "
            f"edgeclass train DATA -o {tmp_path / 'nowhere'})"),
    }
    for name, (dataset, run, message) in cases.items():
        report, stderr = probe("train", dataset, "-o", out, *tiny_train_args(), "--teacher", run)
        assert report["code"] == 2, (name, stderr)
        assert "Traceback" not in stderr, name
        assert stderr.strip().splitlines()[-1] == message, name
        assert not report["tensorflow"], f"{name}: TensorFlow was imported before the refusal"
        assert not out.exists(), name
    # --check-only checks a teacher too, on the split it makes anyway.
    report, stderr = probe("train", data, "--check-only", "--teacher", seven)
    held_out = cases["held-out photos in the teacher's training split"][2]
    assert report["code"] == 2 and stderr.strip().splitlines()[-1] == held_out


@pytest.mark.slow
def test_a_photo_moved_into_test_by_a_new_near_duplicate_is_refused_after_the_split(trained, tmp_path):
    """The check before TensorFlow predicts each photo's split from its own hash; a new near-duplicate
    can still pull a photo the teacher trained on into this run's test split. The real split catches it."""
    import cv2

    from edgeclass.train.split import hashed_split, split_point

    data, teacher, _ = trained
    copy = Path(shutil.copytree(data, tmp_path / "data"))
    split = json.loads((teacher / rundir.SPLIT).read_text())
    photo = split["train"][0]
    image = cv2.imread(str(copy / photo["path"]))
    for quality in range(95, 40, -1):  # a re-encode whose own hash puts it (and so its group) in test
        target = copy / photo["label"] / "reencoded.jpg"
        cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if hashed_split(split_point(42, hashlib.sha256(target.read_bytes()).hexdigest()), (0.8, 0.1, 0.1)) == "test":
            break
    else:
        pytest.fail("no re-encode fell into the test split")
    out = tmp_path / "student"
    result = invoke("train", copy, "-o", out, *tiny_train_args(), "--teacher", teacher)
    assert result.exit_code != 0
    message = str(result.exception)
    assert message.startswith(f"--teacher {teacher.resolve()}: 1 photo(s) of this run's validation/test split were "
                              f"in the teacher's training split, e.g. {photo['path']} (test here)"), message
    assert not out.exists(), "a refused run leaves no directory behind"
