"""Proving a bundle classifies before anything relies on it.

:func:`verify_bundle` is the whole proof, and the one used everywhere: by
``bundle info --verify``, by ``bundle install`` (a new release), by the
service at start and on every hot reload. Hashes and labels
(:func:`~edgeclass.device.bundle.load_bundle`), the model's own tensors
against the manifest (:func:`~edgeclass.device.pipeline.classifier.open_classifier`),
and a test inference on a grey frame that must give one finite score per
label.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..bundle import Bundle, load_bundle
from ..errors import EdgeclassError, ModelError
from .classifier import Classifier, EdgeTPU, open_classifier
from .preprocess import Preprocessor

GREY = 128  # mid-grey: a real image for every normalisation


class Verified(NamedTuple):
    """A bundle that passed, the classifier that ran its test inference, and how long that took."""

    bundle: Bundle
    classifier: Classifier
    inference_ms: float


def verify_bundle(path: str | Path, *, threads: int | None = None, edgetpu: EdgeTPU = EdgeTPU.AUTO,
                  bundle: Bundle | None = None) -> Verified:
    """Load ``path`` and prove it classifies; :class:`EdgeclassError` naming the file otherwise.

    ``bundle``: the same directory already loaded (hash-checked), to skip
    reading it twice. ``edgetpu=EdgeTPU.OFF`` tests the CPU model only (a USB
    Coral held by the running service cannot be opened a second time).
    """
    bundle = bundle if bundle is not None else load_bundle(path)
    classifier = open_classifier(bundle, num_threads=threads, edgetpu=edgetpu)
    spec = bundle.input
    frame = np.full((spec.height, spec.width, 3), GREY, np.uint8)
    start = time.perf_counter()
    try:
        scores = classifier.scores(Preprocessor(spec)(frame))
    except EdgeclassError:
        raise
    except Exception as exc:  # the interpreter's own error types differ per backend
        raise ModelError(f"{classifier.model_path}: test inference failed: {type(exc).__name__}: {exc}") from None
    ms = (time.perf_counter() - start) * 1000
    if scores.shape != (len(bundle.labels),) or not np.all(np.isfinite(scores)):
        raise ModelError(f"{classifier.model_path}: test inference gave {scores.shape} scores "
                         f"(finite: {bool(np.all(np.isfinite(scores)))}), expected {len(bundle.labels)} finite values")
    return Verified(bundle, classifier, ms)
