"""The conversion report that travels in the bundle's ``report/`` folder.

``metrics.json`` (the same figures as bundle.json's ``metrics`` plus the
confusion matrices, and the validation split the gate decided on),
``comparison.txt`` (the tables a human reads: validation, then test),
``confusion.png`` / ``confusion_val.png`` (float and quantized confusion
matrices side by side, test and validation), ``reliability.png`` (float and
quantized reliability diagrams, before and after the temperature) and
``index.html``, the run's page with this bundle's side.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .compare import Comparison

log = logging.getLogger(__name__)

RELIABILITY_PNG = "reliability.png"


def write_report(report_dir: Path, comparison: Comparison, metrics: dict, extra: dict | None = None,
                 validation: Comparison | None = None, text: str | None = None, calibration: dict | None = None) -> Path:
    """Write the report files into ``report_dir`` (created) and return it.

    ``comparison`` is the test split (reported); ``validation`` the split the
    gate decided on; ``calibration`` the figures of :mod:`.calibration`.
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    payload = {**metrics, "confusion_matrices": {k: v.tolist() for k, v in comparison.confusion.items()},
               "labels": list(comparison.labels), **(extra or {})}
    if calibration is not None:
        payload["calibration"] = calibration
        plot_calibration(calibration, comparison.candidate, report_dir / RELIABILITY_PNG)
    if validation is not None:
        payload["validation"] = {**validation.metrics(),
                                 "confusion_matrices": {k: v.tolist() for k, v in validation.confusion.items()}}
        plot_confusions(validation, report_dir / "confusion_val.png")
    (report_dir / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (report_dir / "comparison.txt").write_text(text or comparison_table(comparison), encoding="utf-8")
    plot_confusions(comparison, report_dir / "confusion.png")
    return report_dir


def comparison_table(comparison: Comparison, title: str | None = None) -> str:
    """Per-class accuracy of every model and the candidate's delta, as plain text."""
    names = list(comparison.predictions)
    width = max([len(label) for label in comparison.labels] + [9])
    head = f"{'class':<{width}}  {'images':>6}  " + "  ".join(f"{n:>12}" for n in names) + f"  {'delta (pp)':>10}"
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for label, row in comparison.per_class().items():
        cells = "  ".join(f"{_pct(row[f'{n}_accuracy']):>12}" for n in names)
        delta = "" if row["delta_pp"] is None else f"{row['delta_pp']:+.2f}"
        lines.append(f"{label:<{width}}  {row['images']:>6}  {cells}  {delta:>10}")
    lines.append("-" * len(head))
    total = "  ".join(f"{_pct(comparison.accuracy(n)):>12}" for n in names)
    lines.append(f"{'all':<{width}}  {len(comparison.y_true):>6}  {total}  {0.0 - comparison.drop_pp + 0.0:>+10.2f}")
    lines.append(f"agreement ({comparison.candidate} vs float top-1): {comparison.agreement:.2%}")
    return "\n".join(lines) + "\n"


def plot_calibration(calibration: dict, candidate: str, path: Path) -> None:
    """Reliability diagrams on the test split: float Keras and the bundle's model, before and after the temperature."""
    from edgeclass.device.pipeline.calibration import plot_reliability

    test = calibration["splits"]["test"]
    panels = []
    for model, title in (("float", "float Keras"), (candidate, "int8" if candidate == "int8" else "float TFLite")):
        series = []
        if f"{model}_before" in test:
            series.append(("as trained", test[f"{model}_before"]))
        series.append((f"temperature {calibration['temperature']:.3f}" if "temperature" in calibration else "as trained",
                       test[model]))
        panels.append((f"{title}, test split", series))
    plot_reliability(panels, path)


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def plot_confusions(comparison: Comparison, path: Path) -> None:
    """Float and candidate confusion matrices side by side (the trainer's plot, two panels)."""
    from edgeclass.train.report import plot_confusion_matrices

    panels = [(f"{name} ({comparison.split}): {comparison.accuracy(name):.2%}", comparison.confusion[name])
              for name in (comparison.reference, comparison.candidate)]
    plot_confusion_matrices(panels, list(comparison.labels), path)
