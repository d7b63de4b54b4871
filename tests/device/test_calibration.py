"""Calibration figures with numpy only: ECE, reliability bins, the consistency test, the temperature fit, thresholds."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from edgeclass.device.pipeline import calibration as cal


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _population(n: int, temperature: float, seed: int = 0, classes: int = 5):
    """Scores of a model whose true probabilities are softmax(z / temperature), and labels drawn from those.

    ``softmax(z)`` are the model's scores: over-confident for temperature > 1.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3.0, (n, classes))
    truth = _softmax(z / temperature)
    y = np.array([rng.choice(classes, p=p) for p in truth])
    return _softmax(z), y


def test_ece_and_bins_by_hand():
    # Two bins of 0.5 width: (0, 0.5] holds 0.2 and 0.4 (one right), (0.5, 1] holds 0.9, 1.0 and 0.6 (two right).
    confidence = np.array([0.2, 0.4, 0.9, 1.0, 0.6])
    correct = np.array([True, False, True, True, False])
    bins = cal.reliability_bins(confidence, correct, bins=2)
    assert [b["count"] for b in bins] == [2, 3]
    assert bins[0]["confidence"] == pytest.approx(0.3) and bins[0]["accuracy"] == pytest.approx(0.5)
    assert bins[1]["confidence"] == pytest.approx(2.5 / 3) and bins[1]["accuracy"] == pytest.approx(2 / 3)
    expected = (2 * abs(0.5 - 0.3) + 3 * abs(2 / 3 - 2.5 / 3)) / 5
    assert cal.expected_calibration_error(confidence, correct, bins=2) == pytest.approx(expected)
    # A score of exactly 0 is in the first bin, exactly 1 in the last.
    edge = cal.reliability_bins(np.array([0.0, 1.0]), np.array([False, True]), bins=15)
    assert edge[0]["count"] == 1 and edge[-1]["count"] == 1
    assert cal.expected_calibration_error([], []) == 0.0


def test_top1_checks_shapes():
    with pytest.raises(ValueError, match="expected \\(N, K\\) scores"):
        cal.top1(np.zeros(3), [0, 1, 2])


def test_consistency_test_tells_calibrated_from_overconfident():
    scores, y = _population(1500, temperature=1.0, seed=1)
    p_good = cal.consistency_p_value(*cal.top1(scores, y))
    scores, y = _population(1500, temperature=2.5, seed=1)
    p_bad = cal.consistency_p_value(*cal.top1(scores, y))
    assert p_good > cal.P_NOT_CALIBRATED
    assert p_bad < 0.01
    assert cal.consistency_p_value(*cal.top1(scores, y)) == p_bad  # seeded


def test_temperature_fit_recovers_the_true_temperature_and_keeps_the_answers():
    scores, y = _population(4000, temperature=2.0, seed=2)
    t = cal.fit_temperature(scores, y)
    assert 1.8 < t < 2.2
    scaled = cal.scale_scores(scores, t)
    assert np.array_equal(scaled.argmax(axis=1), scores.argmax(axis=1))
    assert np.allclose(scaled.sum(axis=1), 1.0)
    before = cal.expected_calibration_error(*cal.top1(scores, y))
    after = cal.expected_calibration_error(*cal.top1(scaled, y))
    assert after < before / 2
    assert cal.negative_log_likelihood(scores, y, t) < cal.negative_log_likelihood(scores, y, 1.0)
    # Under-confident scores (as label smoothing gives) get a temperature below 1.
    under, y2 = _population(4000, temperature=0.5, seed=3)
    assert 0.4 < cal.fit_temperature(under, y2) < 0.6


def test_scores_with_zeros_stay_finite():
    scores = np.array([[1.0, 0.0, 0.0], [0.0, 0.7, 0.3]], np.float32)  # float32 softmax underflows to 0
    scaled = cal.scale_scores(scores, 3.0)
    assert np.all(np.isfinite(scaled)) and np.array_equal(scaled.argmax(axis=1), [0, 1])
    assert math.isfinite(cal.negative_log_likelihood(scores, [1, 2], 2.0))


def test_decide_temperature_modes():
    calibrated, y = _population(1500, temperature=1.0, seed=4)
    auto = cal.decide_temperature(calibrated, y, "auto")
    assert auto.temperature is None and "consistent with calibration" in auto.reason
    assert auto.to_json()["p_calibrated"] > cal.P_NOT_CALIBRATED
    forced = cal.decide_temperature(calibrated, y, "on")
    assert forced.temperature is not None and 0.8 < forced.temperature < 1.25 and forced.val_ece_after is not None
    over, y = _population(1500, temperature=2.5, seed=4)
    fitted = cal.decide_temperature(over, y, "auto")
    assert fitted.temperature > 1.5 and fitted.val_ece_after < fitted.val_ece
    assert "not calibrated" in fitted.reason
    assert cal.decide_temperature(over, y, "off").temperature is None
    with pytest.raises(ValueError, match="expected one of auto, on, off"):
        cal.decide_temperature(over, y, "maybe")


def test_threshold_table_counts_what_the_device_would_answer():
    confidence = np.array([0.95, 0.85, 0.75, 0.55, 0.45])
    correct = np.array([True, True, False, True, False])
    rows = {r["threshold"]: r for r in cal.threshold_table(confidence, correct)}
    assert rows[0.5]["images"] == 4 and rows[0.5]["answered"] == pytest.approx(0.8)
    assert rows[0.5]["accuracy"] == pytest.approx(0.75)
    assert rows[0.8]["images"] == 2 and rows[0.8]["accuracy"] == 1.0
    assert rows[0.9]["images"] == 1
    assert cal.threshold_table(np.array([0.3]), np.array([True]))[0]["accuracy"] is None


def test_evaluation_figures_equal_the_converters_for_the_same_answers():
    """``bundle evaluate`` sees only each image's top score and whether it was right; its figures must equal
    those convert computes from the full score vectors."""
    scores, y = _population(300, temperature=1.7, seed=5)
    confidence, correct = cal.top1(scores, y)
    device = cal.evaluation_calibration(confidence.tolist(), correct.tolist())
    workstation = cal.scores_summary(scores, y)
    assert {k: device[k] for k in workstation} == workstation
    assert device["binning"] == cal.binning_description()
    lines = cal.calibration_lines(device)
    assert f"ECE {workstation['ece']:.4f}" in lines[0] and len(lines) == 1 + len(cal.THRESHOLDS)


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="drawing needs matplotlib (workstation install)")
def test_reliability_diagram_is_a_png(tmp_path):
    import cv2

    scores, y = _population(400, temperature=2.0, seed=6)
    before = cal.scores_summary(scores, y)
    after = cal.scores_summary(cal.scale_scores(scores, 2.0), y)
    cal.plot_reliability([("float", [("as trained", before), ("T 2.0", after)]), ("int8", [("as trained", before)])],
                         tmp_path / "r.png")
    image = cv2.imread(str(tmp_path / "r.png"))
    assert image is not None and image.shape[1] > image.shape[0] and image.std() > 10
