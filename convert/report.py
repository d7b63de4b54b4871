"""The conversion report that travels in the bundle's ``report/`` folder.

``metrics.json`` (the same figures as bundle.json's ``metrics`` plus the
confusion matrices), ``comparison.txt`` (a table a human reads), and
``confusion.png`` (float and quantized confusion matrices side by side).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .compare import Comparison

log = logging.getLogger(__name__)


def write_report(report_dir: Path, comparison: Comparison, metrics: dict, extra: dict | None = None) -> Path:
    """Write the report files into ``report_dir`` (created) and return it."""
    report_dir.mkdir(parents=True, exist_ok=True)
    payload = {**metrics, "confusion_matrices": {k: v.tolist() for k, v in comparison.confusion.items()},
               "labels": list(comparison.labels), **(extra or {})}
    (report_dir / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (report_dir / "comparison.txt").write_text(comparison_table(comparison), encoding="utf-8")
    plot_confusions(comparison, report_dir / "confusion.png")
    return report_dir


def comparison_table(comparison: Comparison) -> str:
    """Per-class accuracy of every model and the candidate's delta, as plain text."""
    names = list(comparison.predictions)
    width = max([len(label) for label in comparison.labels] + [9])
    head = f"{'class':<{width}}  {'images':>6}  " + "  ".join(f"{n:>12}" for n in names) + f"  {'delta (pp)':>10}"
    lines = [head, "-" * len(head)]
    for label, row in comparison.per_class().items():
        cells = "  ".join(f"{_pct(row[f'{n}_accuracy']):>12}" for n in names)
        delta = "" if row["delta_pp"] is None else f"{row['delta_pp']:+.2f}"
        lines.append(f"{label:<{width}}  {row['images']:>6}  {cells}  {delta:>10}")
    lines.append("-" * len(head))
    total = "  ".join(f"{_pct(comparison.accuracy(n)):>12}" for n in names)
    lines.append(f"{'all':<{width}}  {len(comparison.y_true):>6}  {total}  {0.0 - comparison.drop_pp + 0.0:>+10.2f}")
    lines.append(f"agreement ({comparison.candidate} vs float top-1): {comparison.agreement:.2%}")
    return "\n".join(lines) + "\n"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def plot_confusions(comparison: Comparison, path: Path) -> None:
    """Float and candidate confusion matrices side by side (row-normalised colours, counts written)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a build server or over ssh
    import matplotlib.pyplot as plt

    names = [comparison.reference, comparison.candidate]
    k = len(comparison.labels)
    size = max(4.0, 0.5 * k + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size), constrained_layout=True)
    for ax, name in zip(axes, names):
        matrix = comparison.confusion[name]
        rows = matrix.sum(axis=1, keepdims=True)
        ax.imshow(np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0), cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{name}: {comparison.accuracy(name):.2%}")
        ax.set_xticks(range(k), comparison.labels, rotation=45, ha="right")
        ax.set_yticks(range(k), comparison.labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= 30:  # counts become unreadable beyond that
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rows[i, 0] and matrix[i, j] / rows[i, 0] > 0.5 else "black")
    fig.savefig(path, dpi=100)
    plt.close(fig)
