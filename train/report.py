"""The evaluation report: ``metrics.json``, a text report and PNG figures.

Metrics are computed with numpy from (true, predicted) label indices, so the
report needs neither scikit-learn nor TensorFlow; figures use matplotlib's
Agg backend (no display needed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

METRICS = "metrics.json"
TEXT_REPORT = "classification_report.txt"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "training_curves.png"
WORST_PNG = "worst_misclassified.png"
RELIABILITY_PNG = "reliability.png"


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` = how many images of true class ``t`` were predicted ``p``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def compute_metrics(y_true, y_pred, labels: list[str] | tuple[str, ...]) -> dict:
    """Accuracy, per-class precision/recall/f1/support, macro and weighted averages, confusion matrix."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(float)
    predicted, support = cm.sum(axis=0).astype(float), cm.sum(axis=1).astype(float)
    # A class never predicted has precision 0 (not NaN), as scikit-learn's zero_division=0.
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    per_class = {
        label: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4), "support": int(support[i])}
        for i, label in enumerate(labels)
    }
    total = support.sum()
    present = support > 0

    def avg(values: np.ndarray, weights: np.ndarray | None) -> float:
        if weights is None:
            return round(float(values[present].mean()) if present.any() else 0.0, 4)
        return round(float((values * weights).sum() / total) if total else 0.0, 4)

    return {
        "accuracy": round(float(tp.sum() / total) if total else 0.0, 4),
        "num_images": int(total),
        "per_class": per_class,
        "macro_avg": {"precision": avg(precision, None), "recall": avg(recall, None), "f1": avg(f1, None), "support": int(total)},
        "weighted_avg": {"precision": avg(precision, support), "recall": avg(recall, support), "f1": avg(f1, support), "support": int(total)},
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),
    }


def text_report(metrics: dict) -> str:
    """A classification report in scikit-learn's familiar layout."""
    width = max(12, *(len(label) for label in metrics["per_class"]))
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    rows = [head, ""]
    for label, m in metrics["per_class"].items():
        rows.append(f"{label:>{width}} {m['precision']:9.3f} {m['recall']:9.3f} {m['f1']:9.3f} {m['support']:9d}")
    rows.append("")
    rows.append(f"{'accuracy':>{width}} {'':9} {'':9} {metrics['accuracy']:9.3f} {metrics['num_images']:9d}")
    for key, name in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        m = metrics[key]
        rows.append(f"{name:>{width}} {m['precision']:9.3f} {m['recall']:9.3f} {m['f1']:9.3f} {m['support']:9d}")
    gap = metrics.get("train_val_gap")
    if gap:
        rows += ["", f"train accuracy {gap['train_accuracy']:.3f}, val accuracy {gap['val_accuracy']:.3f}, "
                     f"gap {gap['gap']:+.3f}" + ("  (large gap: overfitting)" if gap["gap"] > 0.1 else "")]
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


def plot_confusion_matrices(panels: list[tuple[str, np.ndarray]], labels, path: Path) -> None:
    """Confusion matrices side by side, one panel per ``(title, matrix)``: counts written in the
    cells, colours normalised per row (the recall of each true class). Train and convert both draw with it."""
    plt = _pyplot()
    n = len(labels)
    size = max(4.0, 0.6 * n + 2)
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), max(3.5, 0.6 * n + 1.5)), squeeze=False)
    for ax, (title, cm) in zip(axes[0], panels):
        cm = np.asarray(cm)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), labels, rotation=45, ha="right")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        if n <= 30:  # counts become unreadable beyond that
            for t in range(n):
                for p in range(n):
                    ax.text(p, t, str(cm[t, p]), ha="center", va="center", fontsize=8,
                            color="white" if norm[t, p] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
