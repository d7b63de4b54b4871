"""The evaluation report: ``metrics.json``, a text report and PNG figures.

Metrics come from :mod:`edgeclass.device.pipeline.metrics` (numpy only, the
same figures the device's ``bundle evaluate`` reports), so the report needs
neither scikit-learn nor TensorFlow; figures use matplotlib's
Agg backend (no display needed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from edgeclass.device.pipeline.metrics import (  # noqa: F401  (compute_metrics, confusion_matrix: part of this module's API)
    classification_table,
    compute_metrics,
    confusion_matrix,
    plot_confusion_matrices,
)

log = logging.getLogger(__name__)

METRICS = "metrics.json"
TEXT_REPORT = "classification_report.txt"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "training_curves.png"
WORST_PNG = "worst_misclassified.png"
RELIABILITY_PNG = "reliability.png"


def text_report(metrics: dict) -> str:
    """A classification report in scikit-learn's familiar layout, then the train/val gap."""
    rows = classification_table(metrics).rstrip("\n").split("\n")
    gap = metrics.get("train_val_gap")
    if gap:
        rows += ["", f"train accuracy {gap['train_accuracy']:.3f}, val accuracy {gap['val_accuracy']:.3f}, "
                     f"gap {gap['gap']:+.3f}" + ("  (large gap: overfitting)" if gap["gap"] > 0.1 else "")]
    taught = metrics.get("distillation")
    if taught:
        teacher = taught.get("teacher") or {}
        rows += ["", f"distilled from {teacher.get('path')} ({teacher.get('backbone')} alpha {teacher.get('alpha')}, "
                     f"val accuracy {teacher.get('val_accuracy')}), weight {taught['weight']:g}, "
                     f"temperature {taught['temperature']:g}"]
    return "\n".join(rows) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never try to open a window
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(metrics: dict, path: Path) -> None:
    """Confusion matrix PNG of one evaluation (``metrics`` from :func:`compute_metrics`)."""
    title = f"accuracy {metrics['accuracy']:.3f} on {metrics['num_images']} images"
    plot_confusion_matrices([(title, np.asarray(metrics["confusion_matrix"]))], metrics["labels"], path)


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch for train and val, the two phases side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for phase, style in (("head", "--"), ("finetune", "-")):
            rows = [h for h in history if h.get("phase") == phase]
            if not rows:
                continue
            x = [h["step"] for h in rows]
            ax.plot(x, [h[key] for h in rows], style, color="tab:blue", label=f"train ({phase})")
            if all(f"val_{key}" in h for h in rows):
                ax.plot(x, [h[f"val_{key}"] for h in rows], style, color="tab:orange", label=f"val ({phase})")
        ax.set_xlabel("epoch (head epochs first, then fine-tuning)")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_worst(image: Callable[[int], np.ndarray], y_true, y_pred, confidence, labels, path: Path, limit: int = 16) -> int:
    """Grid of the most confidently wrong images with true/predicted labels; returns how many were drawn.

    ``image(k)`` returns the k-th evaluated image (only the few drawn are loaded).
    """
    plt = _pyplot()
    y_true, y_pred, confidence = map(np.asarray, (y_true, y_pred, confidence))
    wrong = np.flatnonzero(y_true != y_pred)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
    cols = min(4, max(1, len(wrong)))
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not len(wrong):
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(image(int(i)))
        ax.set_title(f"true {labels[y_true[i]]}\npred {labels[y_pred[i]]} ({confidence[i]:.2f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(wrong)


def write_report(report_dir: Path, metrics: dict, image: Callable[[int], np.ndarray], y_true, probs: np.ndarray,
                 history: list[dict] | None = None) -> dict:
    """Write metrics.json, the text report and the PNGs into ``report_dir``; return the metrics.

    ``image(k)`` returns the k-th evaluated image, as the model saw it (for the worst-errors grid).
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    y_pred = probs.argmax(axis=1)
    (report_dir / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (report_dir / TEXT_REPORT).write_text(text_report(metrics), encoding="utf-8")
    plot_confusion(metrics, report_dir / CONFUSION_PNG)
    plot_worst(image, y_true, y_pred, probs.max(axis=1), metrics["labels"], report_dir / WORST_PNG)
    if history:
        plot_curves(history, report_dir / CURVES_PNG)
    calibration = metrics.get("calibration")
    if calibration:
        from edgeclass.device.pipeline.calibration import plot_reliability

        series = [("as trained", calibration["before"])]
        if "after" in calibration:
            series.append((f"temperature {calibration['temperature']:.3f}", calibration["after"]))
        plot_reliability([(f"float model, {calibration['split']} split", series)], report_dir / RELIABILITY_PNG)
    log.info("report written to %s", report_dir)
    return metrics
