"""Report maths against hand-computed values, and the figures (no TensorFlow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeclass.train.report import compute_metrics, text_report, write_report


def test_metrics_match_hand_computed_values():
    # true:  a a a a b b c c ;  pred: a a a b b a a c
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 0, 0, 2]
    m = compute_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(5 / 8, abs=1e-4)
    assert m["confusion_matrix"] == [[3, 1, 0], [1, 1, 0], [1, 0, 1]]
    assert m["per_class"]["a"] == {"precision": 0.6, "recall": 0.75, "f1": pytest.approx(2 * 0.6 * 0.75 / 1.35, abs=1e-4), "support": 4}
    assert m["per_class"]["c"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3, abs=1e-4), "support": 2}
    assert m["macro_avg"]["recall"] == pytest.approx((0.75 + 0.5 + 0.5) / 3, abs=1e-4)
    assert m["weighted_avg"]["recall"] == pytest.approx(5 / 8, abs=1e-4)


def test_a_class_never_predicted_has_precision_zero_not_nan():
    m = compute_metrics([0, 1, 1], [1, 1, 1], ["a", "b"])
    assert m["per_class"]["a"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    json.dumps(m, allow_nan=False)


def test_write_report_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    y_true = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    metrics = compute_metrics(y_true, probs.argmax(1), ["a", "b", "c"])
    metrics["train_val_gap"] = {"train_accuracy": 1.0, "val_accuracy": 0.8, "gap": 0.2}
    history = [{"phase": "head", "step": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4},
               {"phase": "finetune", "step": 2, "loss": 0.5, "accuracy": 0.9, "val_loss": 0.7, "val_accuracy": 0.8}]
    loaded = []
    write_report(tmp_path, metrics, lambda k: loaded.append(k) or images[k], y_true, probs, history)
    for name in ("confusion_matrix.png", "training_curves.png", "worst_misclassified.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    assert "weighted avg" in (tmp_path / "classification_report.txt").read_text()
    assert sorted(loaded) == [1, 5], "only the misclassified images are loaded for the grid"
    text = text_report(metrics)
    assert "gap +0.200  (large gap: overfitting)" in text
