"""Measuring what conversion costs: float Keras vs int8 (and float) TFLite on the val and test splits.

TFLite models are run through :class:`edgeclass.device.classifier.Classifier`
and :class:`edgeclass.device.preprocess.Preprocessor`, the code the Pi runs, so
the accuracy recorded in the bundle is the accuracy of the device's whole
path: lookup-table quantization of pixels, the interpreter, dequantized scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeclass.device.bundle import OutputSpec
from edgeclass.device.pipeline.classifier import Classifier
from edgeclass.device.errors import EdgeclassError
from edgeclass.device.bundle import InputSpec
from edgeclass.device.pipeline.preprocess import Preprocessor
from edgeclass.train.report import confusion_matrix

from .progress import Progress, no_progress

log = logging.getLogger(__name__)


class AccuracyDropError(EdgeclassError):
    """The quantized model lost more accuracy than allowed."""


def predict_tflite(model_path: Path, input_spec: InputSpec, output_spec: OutputSpec, images: np.ndarray,
                   description: str = "TFLite", progress: Progress = no_progress, num_threads: int | None = None) -> np.ndarray:
    """Scores (N, K) for resized uint8 images, through the device's preprocessing and interpreter.

    The images are already at the input size, so the Preprocessor's resize is
    the identity and only its pixel-to-tensor step runs, exactly as on the Pi.
    """
    classifier = Classifier(model_path, input_spec, output_spec, num_threads=num_threads)
    preprocess = Preprocessor(input_spec)
    out = np.empty((len(images), output_spec.size), np.float32)
    with progress(description, len(images)) as advance:
        for i, image in enumerate(images):
            out[i] = classifier.scores(preprocess(image))
            advance()
    return out


@dataclass(frozen=True)
class Comparison:
    """Top-1 accuracy of each model on the same images, against the reference."""

    labels: tuple[str, ...]
    y_true: np.ndarray
    predictions: dict  # model name -> (N,) predicted class indices
    reference: str = "float"  # the Keras model
    candidate: str = "int8"  # the model that goes into the bundle
    confusion: dict = field(default_factory=dict)
    split: str = "test"  # which split of the training directory the images are

    def accuracy(self, name: str) -> float:
        return float(np.mean(self.predictions[name] == self.y_true)) if len(self.y_true) else 0.0

    @property
    def agreement(self) -> float:
        """Fraction of images where the candidate's top-1 equals the float Keras model's."""
        ref, cand = self.predictions[self.reference], self.predictions[self.candidate]
        return float(np.mean(ref == cand)) if len(ref) else 0.0

    @property
    def drop_pp(self) -> float:
        """Accuracy lost by the candidate, in percentage points (negative: it gained)."""
        return 100.0 * (self.accuracy(self.reference) - self.accuracy(self.candidate))

    def per_class(self) -> dict:
        rows = {}
        for i, label in enumerate(self.labels):
            mask = self.y_true == i
            n = int(mask.sum())
            acc = {name: (float(np.mean(pred[mask] == i)) if n else None) for name, pred in self.predictions.items()}
            ref, cand = acc[self.reference], acc[self.candidate]
            rows[label] = {"images": n, **{f"{k}_accuracy": v for k, v in acc.items()},
                           "delta_pp": None if n == 0 else round(100.0 * (cand - ref), 3)}
        return rows

    def metrics(self) -> dict:
        """The bundle's ``metrics`` section (fractions; deltas in percentage points)."""
        out = {f"{name}_accuracy": round(self.accuracy(name), 6) for name in self.predictions}
        # Keys the bundle contract promises, whatever the candidate is called.
        out["float_accuracy"] = round(self.accuracy(self.reference), 6)
        out["agreement"] = round(self.agreement, 6)
        out["drop_pp"] = round(self.drop_pp, 3)
        out["compared"] = f"{self.candidate} TFLite vs float Keras"
        out["split"] = self.split
        out[f"{self.split}_images"] = int(len(self.y_true))
        out["per_class"] = self.per_class()
        return out


def compare(labels: Sequence[str], y_true: Sequence[int], scores: dict, candidate: str = "int8",
            split: str = "test") -> Comparison:
    """Build a :class:`Comparison` from per-model score arrays (name -> (N, K))."""
    y = np.asarray(y_true, np.int64)
    predictions = {name: np.argmax(s, axis=1).astype(np.int64) if len(s) else np.zeros(0, np.int64)
                   for name, s in scores.items()}
    confusion = {name: confusion_matrix(y, p, len(labels)) for name, p in predictions.items()}
    return Comparison(tuple(labels), y, predictions, candidate=candidate, confusion=confusion, split=split)


def check_gate(comparison: Comparison, max_drop_pp: float, min_agreement: float, hint: str = "") -> dict:
    """Accept or refuse the candidate on ``comparison`` (the validation split); returns the verdict's record.

    Two conditions, both needed: the candidate loses at most ``max_drop_pp``
    accuracy points, and its top-1 answer equals float Keras' on at least
    ``min_agreement`` of the images. Agreement is the sharper of the two: it
    counts every image int8 changes, where accuracy lets a lost image and a
    gained one cancel. Raises :class:`AccuracyDropError` when either fails.
    """
    n = len(comparison.y_true)
    drop, agreement = comparison.drop_pp, comparison.agreement
    record = {
        "split": comparison.split, "images": n,
        "float_accuracy": round(comparison.accuracy(comparison.reference), 6),
        f"{comparison.candidate}_accuracy": round(comparison.accuracy(comparison.candidate), 6),
        "drop_pp": round(drop, 3), "agreement": round(agreement, 6),
        "max_drop_pp": max_drop_pp, "min_agreement": min_agreement,
        "one_image_pp": round(100.0 / n, 3) if n else None,
    }
    ref, cand = comparison.accuracy(comparison.reference), comparison.accuracy(comparison.candidate)
    drop_fails, agreement_fails = drop > max_drop_pp + 1e-9, agreement < min_agreement - 1e-9
    record["passed"] = not (drop_fails or agreement_fails)
    if not record["passed"]:
        # Both figures, whichever failed: the one that passed tells how far off the other is.
        accuracy = (f"accuracy {cand:.2%} is {drop:.2f} points below float {ref:.2%} "
                    + (f"(more than --max-drop {max_drop_pp:g})" if drop_fails else f"(within --max-drop {max_drop_pp:g})"))
        agrees = (f"top-1 agreement with float is {agreement:.2%} "
                  + (f"(below --min-agreement {min_agreement:.0%})" if agreement_fails
                     else f"(at least --min-agreement {min_agreement:.0%})"))
        raise AccuracyDropError(
            f"{comparison.candidate} on the {n} {_split_name(comparison.split)} images: {accuracy}; {agrees}; no bundle written"
            + (f" ({hint})" if hint else "")
        )
    return record


def _split_name(split: str) -> str:
    return {"val": "validation"}.get(split, split)
