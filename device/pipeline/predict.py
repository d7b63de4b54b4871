"""Classifying image files: the ``edgeclass predict`` command's engine."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple

from ..errors import ImageError
from .classifier import Classifier, Scored, top_k
from .images import load_image
from .preprocess import Preprocessor


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
