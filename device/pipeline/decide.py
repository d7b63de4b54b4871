"""From per-frame scores to a decision: smoothing, threshold, unknown, change events."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .classifier import Scored, top_k
from .config import DecisionConfig

UNKNOWN = "unknown"


class Decision(NamedTuple):
    """What the classifier concluded for one frame, after smoothing, and what it cost."""

    label: str  # the decided label, or UNKNOWN when the best score is below threshold
    score: float  # smoothed score of the best label
    top_k: list[Scored]  # smoothed, best first
    changed: bool  # the decided label differs from the previous frame's
    scores: np.ndarray | None = None  # this frame's own (unsmoothed) score per label
    labels: tuple[str, ...] = ()  # label i names scores[i]
    time: float = 0.0  # Unix time of the decision
    infer_ms: float = 0.0  # the interpreter's share
    latency_ms: float = 0.0  # from capture to decision (monotonic clock)


class Decider:
    """Temporal smoothing and thresholding over a stream of score vectors.

    ``smoothing`` is the weight an exponential moving average keeps from the
    past (0 = every frame on its own, 0.8 = about the last 5 frames): it stops
    a single odd frame from flipping the answer. A best score under
    ``threshold`` decides ``unknown`` rather than a low-confidence guess.
    """

    def __init__(self, labels: Sequence[str], *, k: int = 3, threshold: float = 0.0, smoothing: float = 0.0,
                 unknown: str = UNKNOWN) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.labels = tuple(labels)
        self.k = k
        self.threshold = threshold
        self.smoothing = smoothing
        self.unknown = unknown
        self._ema: np.ndarray | None = None
        self._last: str | None = None

    def reset(self) -> None:
        """Forget the history (after a camera reopen or a model swap)."""
        self._ema = None
        self._last = None

    def update(self, scores: np.ndarray) -> Decision:
        """Fold in one frame's scores and return the decision."""
        scores = np.asarray(scores, dtype=np.float32)
        if self._ema is None or self.smoothing == 0.0 or self._ema.shape != scores.shape:
            self._ema = scores.copy()
        else:
            self._ema *= self.smoothing
            self._ema += (1.0 - self.smoothing) * scores
        best = top_k(self._ema, self.labels, self.k)
        label = best[0].label if best[0].score >= self.threshold else self.unknown
        changed = label != self._last
        self._last = label
        return Decision(label, best[0].score, best, changed, scores, self.labels)


def make_decider(labels: Sequence[str], config: DecisionConfig) -> Decider:
    """The :class:`Decider` for a bundle's labels under ``[decision]`` settings (the one place one is built)."""
    return Decider(labels, k=config.top_k, threshold=config.threshold, smoothing=config.smoothing)
