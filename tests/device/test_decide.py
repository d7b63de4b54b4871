"""Decisions over a stream of scores: smoothing, threshold, unknown, change events."""

from __future__ import annotations

import numpy as np
import pytest

from edgeclass.device.pipeline.decide import UNKNOWN, Decider

LABELS = ("cat", "dog", "bird")


def test_without_smoothing_each_frame_decides_alone():
    d = Decider(LABELS, k=2, threshold=0.5)
    first = d.update(np.array([0.7, 0.2, 0.1]))
    assert (first.label, first.changed) == ("cat", True)
    assert [s.label for s in first.top_k] == ["cat", "dog"]
    again = d.update(np.array([0.8, 0.1, 0.1]))
    assert (again.label, again.changed) == ("cat", False)
    flip = d.update(np.array([0.1, 0.85, 0.05]))
    assert (flip.label, flip.changed, round(flip.score, 2)) == ("dog", True, 0.85)


def test_below_threshold_is_unknown_and_is_a_change():
    d = Decider(LABELS, threshold=0.6)
    assert d.update(np.array([0.9, 0.05, 0.05])).label == "cat"
    unsure = d.update(np.array([0.4, 0.35, 0.25]))
    assert (unsure.label, unsure.changed) == (UNKNOWN, True)
    assert unsure.top_k[0].label == "cat"  # the best guess is still reported


def test_smoothing_ignores_a_single_odd_frame_then_follows_a_real_change():
    d = Decider(LABELS, threshold=0.0, smoothing=0.8)
    cat, dog = np.array([0.9, 0.05, 0.05]), np.array([0.05, 0.9, 0.05])
    for _ in range(10):
        d.update(cat)
    glitch = d.update(dog)
    assert glitch.label == "cat" and not glitch.changed
    labels = [d.update(dog).label for _ in range(10)]
    assert labels[-1] == "dog"
    assert labels.index("dog") >= 1  # it took more than one frame to switch
    d.reset()
    assert d.update(cat).changed


def test_ties_break_by_label_order():
    d = Decider(LABELS, k=3)
    decision = d.update(np.array([0.2, 0.4, 0.4]))
    assert [s.label for s in decision.top_k] == ["dog", "bird", "cat"]


@pytest.mark.parametrize("kwargs", [{"smoothing": 1.0}, {"smoothing": -0.1}, {"threshold": 1.5}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        Decider(LABELS, **kwargs)
