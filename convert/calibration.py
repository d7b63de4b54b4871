"""The conversion report's calibration: ECE of float Keras and of the bundle's model, before and after the temperature.

The figures are :func:`edgeclass.device.pipeline.calibration.summary` of each
model's scores on the validation and test splits, so they compare directly
with the trainer's report and with ``bundle evaluate`` on the device.
"""

from __future__ import annotations

import numpy as np

from edgeclass.device.pipeline.calibration import DEFAULT_BINS, TemperatureDecision, binning_description, scores_summary

SPLITS = ("val", "test")


def calibration_figures(decision: TemperatureDecision, y_true: dict, scores: dict, candidate: str,
                        float_before: dict | None = None, candidate_before: dict | None = None,
                        folded_into: str | None = None, bins: int = DEFAULT_BINS) -> dict:
    """``report/metrics.json``'s ``calibration``.

    ``scores[split]`` holds each model's scores as shipped (``float`` Keras and
    the ``candidate``); ``float_before`` / ``candidate_before`` the same models
    without the temperature, when one was folded in.
    """
    splits = {}
    for split in SPLITS:
        y = np.asarray(y_true[split])
        entry = {}
        if float_before:
            entry["float_before"] = scores_summary(float_before[split], y, bins)
        entry["float"] = scores_summary(scores[split]["float"], y, bins)
        if candidate_before:
            entry[f"{candidate}_before"] = scores_summary(candidate_before[split], y, bins)
        entry[candidate] = scores_summary(scores[split][candidate], y, bins)
        splits[split] = entry
    test = splits["test"]
    out = {"binning": binning_description(bins), "bins": bins, "split": "test", "decision": decision.reason,
           "fit": decision.to_json(), "ece": test.get("float_before", test["float"])["ece"],
           f"ece_{candidate}": test[candidate]["ece"]}
    if decision.temperature is not None:
        out.update(temperature=round(decision.temperature, 6), fitted_on="val", folded_into=folded_into,
                   ece_after=test["float"]["ece"])
        if candidate_before:
            out[f"ece_{candidate}_before"] = test[f"{candidate}_before"]["ece"]
    out["splits"] = splits
    out["summary"] = summary_line(out, candidate)
    return out


def summary_line(figures: dict, candidate: str) -> str:
    """One line for the log: ECE on test, float and the bundle's model, and what was decided."""
    name = "int8" if candidate == "int8" else "float TFLite"
    head = f"calibration (test split, {figures['bins']} bins): "
    if "temperature" in figures:
        before = figures.get(f"ece_{candidate}_before")
        shipped = f"{before:.4f} -> {figures[f'ece_{candidate}']:.4f}" if before is not None else f"{figures[f'ece_{candidate}']:.4f}"
        return (head + f"ECE float {figures['ece']:.4f} -> {figures['ece_after']:.4f}, {name} {shipped}, with temperature "
                f"{figures['temperature']:.3f} fitted on validation ({figures['decision']}) and folded into the bundle's model")
    return head + f"ECE float {figures['ece']:.4f}, {name} {figures[f'ece_{candidate}']:.4f}; no temperature: {figures['decision']}"


def compact(figures: dict) -> dict:
    """The few figures ``bundle.json`` records: the temperature and the ECEs on test (and validation)."""
    keys = [k for k in figures if k.startswith("ece")] + ["bins", "split"]
    out = {k: figures[k] for k in keys if k in figures}
    out["temperature"] = figures.get("temperature")
    val = figures["splits"]["val"]
    out["val"] = {f"ece_{name}": summary["ece"] for name, summary in val.items()}
    return out
