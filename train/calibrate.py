"""Calibrated scores from a Keras model: fit a temperature on validation and fold it into the last layer.

The maths (ECE, reliability bins, the temperature fit and when to use it)
is :mod:`edgeclass.device.pipeline.calibration`, shared with ``convert`` and
the device's ``bundle evaluate``. This module does the Keras side: dividing
the final softmax ``Dense`` layer's kernel and bias by ``T`` makes the model
itself output ``softmax(logits / T)``, so the converted int8 model, and the
device running it, emit calibrated scores with no change on the device.
"""

from __future__ import annotations

import numpy as np

from edgeclass.device.errors import EdgeclassError
from edgeclass.device.pipeline.calibration import (
    DEFAULT_BINS,
    TemperatureDecision,
    binning_description,
    decide_temperature,
    scale_scores,
    scores_summary,
)


class CalibrationError(EdgeclassError):
    """A temperature cannot be folded into this model."""


def final_softmax_dense(model):
    """The ``Dense`` layer whose softmax is the model's output (searched through nested models, last first)."""
    import keras

    def walk(layer):
        for inner in reversed(getattr(layer, "layers", [])):
            found = walk(inner)
            if found is not None:
                return found
        if isinstance(layer, keras.layers.Dense) and getattr(layer.activation, "__name__", "") == "softmax":
            return layer
        return None

    dense = walk(model)
    if dense is None:
        raise CalibrationError(f"{model.name}: no Dense layer with a softmax activation to fold a temperature into")
    return dense


def fold_temperature(model, temperature: float, probe: np.ndarray) -> str:
    """Divide the final softmax layer's weights and bias by ``temperature``, in place; returns the layer's name.

    ``probe`` (a few input images) proves the fold: the model's new outputs
    must equal ``softmax(log(old) / T)``; otherwise the weights are restored
    and :class:`CalibrationError` says why (the softmax was not the output).
    """
    dense = final_softmax_dense(model)
    before = np.asarray(model.predict_on_batch(probe), np.float64)
    weights = dense.get_weights()
    dense.set_weights([w / np.float32(temperature) for w in weights])
    after = np.asarray(model.predict_on_batch(probe), np.float64)
    expected = scale_scores(before, temperature)
    if not np.allclose(after, expected, atol=1e-4):
        dense.set_weights(weights)
        raise CalibrationError(f"{model.name}: scaling layer {dense.name!r} did not scale the model's output "
                               f"(largest difference {np.abs(after - expected).max():.3g}); scores left uncalibrated")
    return dense.name


def calibration_section(decision: TemperatureDecision, before: np.ndarray, after: np.ndarray, y_true,
                        split: str = "test", folded_into: str | None = None, bins: int = DEFAULT_BINS) -> dict:
    """``metrics.json``'s ``calibration``: ECE on ``split`` before (and after) the temperature, with the bins.

    ``before`` are the model's scores without the temperature, ``after`` with
    it (the same array when none was fitted).
    """
    first = scores_summary(before, y_true, bins)
    out = {
        "binning": binning_description(bins),
        "bins": bins,
        "split": split,
        "ece": first["ece"],
        "decision": decision.reason,
        "val": decision.to_json(),
        "before": first,
    }
    if decision.temperature is not None:
        second = scores_summary(after, y_true, bins)
        out.update(temperature=round(decision.temperature, 6), ece_after=second["ece"], fitted_on="val",
                   folded_into=folded_into, after=second)
    return out


def report_section(test_scores: np.ndarray, y_test, val: tuple | None = None, no_fit_reason: str | None = None
                   ) -> tuple[dict, np.ndarray | None]:
    """The trainer report's ``calibration`` and, when a temperature was fitted, the test scores after it.

    The model on disk is left as trained: ``edgeclass convert`` fits the same
    temperature on the same validation scores and folds it into the bundle's model.
    """
    if val is None:
        decision = TemperatureDecision(None, no_fit_reason or "no validation split to fit a temperature on",
                                       float("nan"), None, float("nan"), 0)
        section = calibration_section(decision, test_scores, test_scores, y_test)
        del section["val"]
        return section, None
    val_scores, val_y = val
    decision = decide_temperature(val_scores, val_y, "auto")
    after = scale_scores(test_scores, decision.temperature) if decision.temperature is not None else test_scores
    section = calibration_section(decision, test_scores, after, y_test)
    if decision.temperature is not None:
        section["applied_by"] = "edgeclass convert (folded into the bundle's model; model.keras is left as trained)"
    return section, after if decision.temperature is not None else None
