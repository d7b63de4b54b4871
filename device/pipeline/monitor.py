"""Watching the model in the field: what it decides, how sure it is, and when that changes.

:class:`Monitor` is updated by the frame loop with every decision (a few
dictionary and deque operations per frame) and read by the outputs that
report on the run: the live page, ``/metrics``, MQTT diagnostics, the state
file. It keeps

- totals since the start: decisions per label, frames, a latency histogram
  (Prometheus-style cumulative buckets, in seconds);
- a rolling window (``window`` seconds, default 10 minutes): decisions per
  label per minute, the uncertain rate (the share of frames whose top score
  was below ``uncertain_below``) and the mean top score;
- a confidence alarm: the rolling mean top score is compared with the mean of
  the first full window (the baseline, taken when the scene was the one the
  model was deployed on). A fall of more than ``drop`` (absolute, default
  0.15) says the scene has changed and the model needs new data.

The window is bucketed per second, so memory is bounded by ``window``
whatever the frame rate. The frame loop updates it while outputs read it
from their own threads (the HTTP server, the MQTT publisher): one lock, held
for a few microseconds per frame.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Sequence

from .decide import UNKNOWN, Decision

# Seconds; the upper bounds of the latency histogram's buckets (+Inf implied).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class _Second:
    """What one second of frames contributed to the rolling window."""

    at: int
    frames: int = 0
    uncertain: int = 0
    top_sum: float = 0.0
    labels: Counter = field(default_factory=Counter)


class Monitor:
    """Rolling and cumulative statistics of the decisions (see the module docstring)."""

    def __init__(self, labels: Sequence[str] = (), *, window: float = 600.0, uncertain_below: float = 0.5,
                 drop: float = 0.15) -> None:
        self.window = float(window)
        self.uncertain_below = uncertain_below
        self.drop = drop
        self.decisions: Counter = Counter({label: 0 for label in (*labels, UNKNOWN)})
        self.frames = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, the last is +Inf
        self.latency_sum = 0.0
        self._seconds: deque[_Second] = deque()
        self._started: float | None = None
        self.baseline: float | None = None
        self._lock = threading.Lock()

    def set_labels(self, labels: Sequence[str]) -> None:
        """A new bundle: its labels start at 0 (counts of labels it no longer has are kept)."""
        with self._lock:
            for label in labels:
                self.decisions.setdefault(label, 0)

    def update(self, decision: Decision, now: float) -> None:
        """Fold in one decision made at monotonic time ``now``."""
        with self._lock:
            self._update(decision, now)

    def _update(self, decision: Decision, now: float) -> None:
        self.frames += 1
        self.decisions[decision.label] += 1
        latency = decision.latency_ms / 1000.0
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
        self.latency_sum += latency
        top = float(decision.scores.max()) if decision.scores is not None and len(decision.scores) else decision.score
        second = int(now)
        if not self._seconds or self._seconds[-1].at != second:
            self._seconds.append(_Second(second))
        bucket = self._seconds[-1]
        bucket.frames += 1
        bucket.uncertain += top < self.uncertain_below
        bucket.top_sum += top
        bucket.labels[decision.label] += 1
        if self._started is None:
            self._started = now
        self._expire(now)
        if self.baseline is None and now - self._started >= self.window:
            self.baseline = self._mean_top()

    def _expire(self, now: float) -> None:
        while self._seconds and self._seconds[0].at <= now - self.window:
            self._seconds.popleft()

    def _mean_top(self) -> float | None:
        frames = sum(s.frames for s in self._seconds)
        return sum(s.top_sum for s in self._seconds) / frames if frames else None

    def snapshot(self, now: float) -> dict:
        """The figures as plain data (JSON-ready)."""
        with self._lock:
            return self._snapshot(now)

    def _snapshot(self, now: float) -> dict:
        self._expire(now)
        frames = sum(s.frames for s in self._seconds)
        labels: Counter = Counter()
        for s in self._seconds:
            labels.update(s.labels)
        span = min(self.window, now - self._started) if self._started is not None else 0.0
        minutes = max(span, 1.0) / 60.0
        mean_top = self._mean_top()
        dropped = (self.baseline is not None and mean_top is not None and self.baseline - mean_top > self.drop)
        return {
            "window_s": round(span, 1),
            "frames_in_window": frames,
            "label_rates_per_min": {label: round(n / minutes, 2) for label, n in sorted(labels.items())},
            "uncertain_rate": round(sum(s.uncertain for s in self._seconds) / frames, 4) if frames else 0.0,
            "mean_top_score": None if mean_top is None else round(mean_top, 4),
            "baseline_top_score": None if self.baseline is None else round(self.baseline, 4),
            "confidence_dropped": bool(dropped),
            "decisions_total": dict(self.decisions),
        }

    def latency_histogram(self) -> list[tuple[float, int]]:
        """Cumulative ``(upper bound in seconds, count)`` pairs, the last bound ``inf``: Prometheus' ``le`` buckets."""
        with self._lock:
            counts = list(self.latency_counts)
        cumulative, total = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), counts):
            total += count
            cumulative.append((bound, total))
        return cumulative
