"""The field monitor: totals, the rolling window, the uncertain rate and the confidence alarm."""

from __future__ import annotations

import math

import numpy as np

from edgeclass.device.pipeline.decide import Decider
from edgeclass.device.pipeline.monitor import LATENCY_BUCKETS, Monitor

LABELS = ("cat", "dog")


def _decision(scores, latency_ms=20.0):
    return Decider(LABELS, threshold=0.5).update(np.asarray(scores, np.float32))._replace(latency_ms=latency_ms)


def test_totals_rates_and_uncertain_rate_over_the_window():
    m = Monitor(LABELS, window=60, uncertain_below=0.5)
    for second in range(30):  # 30 s at 2 fps: cat sure, then dog unsure
        m.update(_decision([0.9, 0.1]), 1000.0 + second)
        m.update(_decision([0.45, 0.55] if second % 3 else [0.4, 0.35], latency_ms=300), 1000.5 + second)
    snap = m.snapshot(1030.0)
    assert snap["frames_in_window"] == 60 and m.frames == 60
    assert snap["decisions_total"]["cat"] == 30 and snap["decisions_total"]["unknown"] == 10
    assert snap["decisions_total"]["dog"] == 20
    # 30 cat decisions in 30 s = 60 a minute.
    assert snap["label_rates_per_min"]["cat"] == 60.0
    assert snap["uncertain_rate"] == round(10 / 60, 4)  # the [0.4, 0.35] frames
    assert snap["baseline_top_score"] is None  # the first full window has not passed yet
    buckets = dict(m.latency_histogram())
    assert buckets[math.inf] == 60 and buckets[0.025] == 30 and buckets[0.25] == 30 and buckets[0.5] == 60
    assert abs(m.latency_sum - (30 * 0.02 + 30 * 0.3)) < 1e-6 and len(buckets) == len(LATENCY_BUCKETS) + 1


def test_old_frames_leave_the_window():
    m = Monitor(LABELS, window=10)
    for second in range(5):
        m.update(_decision([0.9, 0.1]), 100.0 + second)
    assert m.snapshot(104.5)["frames_in_window"] == 5
    assert m.snapshot(200.0)["frames_in_window"] == 0 and m.frames == 5


def test_confidence_alarm_when_the_scene_changes():
    m = Monitor(LABELS, window=20, drop=0.15)
    t = 0.0
    for _ in range(40):  # the deployed scene: confident
        m.update(_decision([0.92, 0.08]), t)
        t += 1
    assert m.snapshot(t)["baseline_top_score"] == 0.92 and not m.snapshot(t)["confidence_dropped"]
    for _ in range(25):  # a new scene: the model hesitates
        m.update(_decision([0.6, 0.4]), t)
        t += 1
    snap = m.snapshot(t)
    assert snap["mean_top_score"] == 0.6 and snap["confidence_dropped"]
