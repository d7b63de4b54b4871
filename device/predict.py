"""Classifying image files: the ``edgeclass predict`` command's engine."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from .classifier import Classifier
from .errors import ImageError
from .images import load_image
from .preprocess import Preprocessor


class Scored(NamedTuple):
    """One label and its score."""

    label: str
    score: float


def top_k(scores: np.ndarray, labels: tuple[str, ...] | list[str], k: int) -> list[Scored]:
    """The ``k`` best labels, best first (ties broken by label index)."""
    k = max(1, min(k, len(scores)))
    # argpartition is O(n) on 1001 ImageNet classes; only the k survivors are sorted.
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.lexsort((best, -scores[best]))]
    return [Scored(labels[i], float(scores[i])) for i in best]


class ImagePrediction(NamedTuple):
    path: Path
    top_k: list[Scored] | None
    error: str | None = None


def predict_files(classifier: Classifier, preprocess: Preprocessor, labels, paths, k: int = 3) -> Iterator[ImagePrediction]:
    """Classify each image file; a file that does not decode yields its error, not an exception."""
    for path in paths:
        try:
            rgb = load_image(path)
        except ImageError as exc:
            yield ImagePrediction(Path(path), None, str(exc))
            continue
        yield ImagePrediction(Path(path), top_k(classifier.scores(preprocess(rgb)), labels, k))
