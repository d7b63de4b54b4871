"""Classification metrics from (true, predicted) label indices, with numpy only.

The trainer's report, ``edgeclass evaluate``, the converter's report and the
device's ``bundle evaluate`` compute (and draw) their figures here, so a
number means the same thing on the workstation and on the Pi, and neither
needs scikit-learn. Drawing needs matplotlib, which only the workstation
install has; it is imported when a figure is drawn.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` = how many images of true class ``t`` were predicted ``p``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def unique_names(labels) -> list[str]:
    """The labels, a repeated one suffixed with its index ("crane", ..., "crane [518]"): ImageNet has repeats."""
    seen: set[str] = set()
    out = []
    for i, label in enumerate(labels):
        out.append(label if label not in seen else f"{label} [{i}]")
        seen.add(label)
    return out


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
        for i, label in enumerate(unique_names(labels))
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


def classification_table(metrics: dict) -> str:
    """Per-class precision, recall, F1 and support of :func:`compute_metrics`, in scikit-learn's layout."""
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
    return "\n".join(rows) + "\n"


def confusion_text(matrix, labels) -> str:
    """The confusion matrix as a plain-text table: rows are the true class, columns the predicted one."""
    matrix = np.asarray(matrix)
    width = max(len("true/predicted"), *(len(label) for label in labels))
    biggest = int(matrix.max()) if matrix.size else 0
    cell = max(len(str(biggest)), *(min(len(label), 10) for label in labels)) + 2
    rows = [f"{'true/predicted':<{width}}" + "".join(f"{label[:10]:>{cell}}" for label in labels)]
    for label, row in zip(labels, matrix):
        rows.append(f"{label:<{width}}" + "".join(f"{int(v):>{cell}}" for v in row))
    return "\n".join(rows) + "\n"


def plot_confusion_matrices(panels: list[tuple[str, np.ndarray]], labels, path) -> None:
    """Confusion matrices side by side, one panel per ``(title, matrix)``: counts written in the
    cells, colours normalised per row (the recall of each true class). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never try to open a window (a Pi over ssh has no display)
    import matplotlib.pyplot as plt

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
