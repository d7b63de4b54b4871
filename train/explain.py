"""The report's explained images: the worst errors and a few correct answers per class, with Grad-CAM heatmaps.

Written into ``report/gradcam/``: for each chosen test image its input (the
device's centre crop), the heatmap of the answer and, for an error, the
heatmap of the true class, as small JPEGs, and ``gradcam.json`` listing them
with the labels and scores (the page reads that, so it needs no TensorFlow).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

GRADCAM_DIR = "gradcam"  # under report/
GRADCAM_INDEX = "gradcam.json"

WORST = 12  # errors shown, most confident first
CORRECT_PER_CLASS = 3  # the surest, a middling and the least sure right answer of each class
THUMB = 160  # pixels: small enough that the page stays a few hundred KB


def choose(y_true, probs: np.ndarray, worst: int = WORST, per_class: int = CORRECT_PER_CLASS) -> list[tuple[str, int]]:
    """``(kind, row)`` of the images to explain: ``worst`` errors, then ``per_class`` right answers per class."""
    y_true = np.asarray(y_true, np.int64)
    y_pred, confidence = probs.argmax(axis=1), probs.max(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    chosen = [("worst", int(i)) for i in wrong[np.argsort(-confidence[wrong], kind="stable")][:worst]]
    for c in range(probs.shape[1]):
        right = np.flatnonzero((y_true == c) & (y_pred == c))
        right = right[np.argsort(-confidence[right], kind="stable")]
        if len(right) <= per_class:
            picks = list(right)
        else:  # spread from the surest to the least sure
            picks = [right[round(j * (len(right) - 1) / (per_class - 1))] for j in range(per_class)] if per_class > 1 else [right[0]]
        chosen += [("correct", int(i)) for i in picks]
    return chosen


def _jpeg(image: np.ndarray, path: Path) -> str:
    import cv2

    if image.shape[0] > THUMB:
        image = cv2.resize(image, (THUMB, THUMB * image.shape[0] // image.shape[1]), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 82])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB image
        raise RuntimeError(f"could not encode {path.name}")
    path.write_bytes(data.tobytes())
    return path.name


def write_explanations(report_dir: Path, model, image: Callable[[int], np.ndarray], names: Callable[[int], str],
                       y_true, probs: np.ndarray, labels, calibrated: np.ndarray | None = None) -> list[dict]:
    """Compute the heatmaps and write ``report_dir/gradcam/``; returns the index (empty when none can be made).

    ``image(k)`` / ``names(k)`` give the k-th evaluated image (as the model saw
    it) and its path in the dataset; ``calibrated`` the scores after the
    temperature, when one was fitted.
    """
    from .gradcam import GradCamError, heatmaps, overlay

    folder = Path(report_dir) / GRADCAM_DIR
    if folder.exists():
        shutil.rmtree(folder)  # a previous report's images must not linger under new names
    chosen = choose(y_true, probs)
    if not chosen:
        return []
    y_true = np.asarray(y_true, np.int64)
    rows = [k for _, k in chosen]
    pixels = np.stack([np.asarray(image(k), np.uint8) for k in rows])
    predicted = probs[rows].argmax(axis=1)
    try:
        heat_pred = heatmaps(model, pixels, predicted)
        errors = [i for i, (kind, _) in enumerate(chosen) if kind == "worst"]
        heat_true = dict(zip(errors, heatmaps(model, pixels[errors], y_true[rows][errors]))) if errors else {}
    except GradCamError as exc:
        log.warning("no Grad-CAM heatmaps: %s", exc)
        return []
    folder.mkdir(parents=True)
    index, counters = [], {}
    for i, (kind, k) in enumerate(chosen):
        t, p = int(y_true[k]), int(predicted[i])
        counters[(kind, t)] = counters.get((kind, t), 0) + 1
        stem = f"worst-{len([e for e in index if e['kind'] == 'worst']) + 1:02d}" if kind == "worst" \
            else f"correct-{t:02d}-{counters[(kind, t)]}"
        entry = {"kind": kind, "path": names(k), "true": labels[t], "predicted": labels[p],
                 "score": round(float(probs[k, p]), 6), "true_score": round(float(probs[k, t]), 6),
                 "score_calibrated": round(float(calibrated[k, p]), 6) if calibrated is not None else None,
                 "image": _jpeg(pixels[i], folder / f"{stem}.jpg"),
                 "heat_predicted": _jpeg(overlay(pixels[i], heat_pred[i]), folder / f"{stem}-predicted.jpg"),
                 "heat_true": _jpeg(overlay(pixels[i], heat_true[i]), folder / f"{stem}-true.jpg") if i in heat_true else None}
        index.append(entry)
    (folder / GRADCAM_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    log.info("Grad-CAM heatmaps of %d images in %s", len(index), folder)
    return index
