"""One Keras model -> its float32 and int8 TFLite models, and their scores through the device's path.

``convert`` builds the bundle's models with it, and, when a temperature is
folded into the last layer, the int8 model of the network as trained too
(only to measure what the temperature changed on int8).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclass.device.bundle import InputSpec, OutputSpec, ResizePolicy
from edgeclass.train.quiet import native_output_to_debug_log

from .progress import Progress


@dataclass
class BuiltModels:
    """The TFLite files of one Keras model and what the manifest needs to know about them."""

    float_path: Path
    float_specs: tuple[InputSpec, OutputSpec]
    int8_path: Path | None
    int8_specs: tuple[InputSpec, OutputSpec] | None
    normalization: object  # quantize.Normalization when it moved to the device, else None
    correction: object  # the bias-correction report, or None
    io: str

    @property
    def candidate(self) -> str:
        """The model that goes into the bundle: ``int8``, or ``float_tflite`` for ``--float``."""
        return "int8" if self.int8_path is not None else "float_tflite"

    @property
    def candidate_path(self) -> Path:
        return self.int8_path if self.int8_path is not None else self.float_path

    @property
    def candidate_specs(self) -> tuple[InputSpec, OutputSpec]:
        return self.int8_specs if self.int8_specs is not None else self.float_specs

    def scores(self, images: np.ndarray, split: str, progress: Progress, threads: int | None) -> dict[str, np.ndarray]:
        """Each TFLite model's scores on ``images`` (already at the input size), through the device's code."""
        from .compare import predict_tflite

        out = {"float_tflite": predict_tflite(self.float_path, *self.float_specs, images, f"float TFLite ({split})",
                                              progress, num_threads=threads)}
        if self.int8_path is not None:
            out["int8"] = predict_tflite(self.int8_path, *self.int8_specs, images, f"{self.io} TFLite ({split})",
                                         progress, num_threads=threads)
        return out

    def candidate_scores(self, images: np.ndarray, description: str, progress: Progress, threads: int | None) -> np.ndarray:
        from .compare import predict_tflite

        return predict_tflite(self.candidate_path, *self.candidate_specs, images, description, progress, num_threads=threads)


def build_tflite(model, model_path: Path, work: Path, calibration: np.ndarray | None, policy: ResizePolicy, options,
                 progress: Progress, seconds: dict) -> BuiltModels:
    """Export ``model`` and convert it to float32 and (with ``calibration`` images) bias-corrected int8 TFLite
    under ``work``; ``seconds`` receives each step's time. ``model_path`` names the model in errors."""
    from . import quantize
    from .pipeline import specs_from_model

    work.mkdir(parents=True, exist_ok=True)
    export_model, normalization = model, None
    if options.normalization == "device":
        export_model, normalization = quantize.split_normalization(model, model_path)
    start = time.perf_counter()
    saved = quantize.export_saved_model(export_model, work / "saved_model")
    seconds["export"] = time.perf_counter() - start

    float_path = work / "float" / "model.tflite"
    float_path.parent.mkdir()
    start = time.perf_counter()
    float_path.write_bytes(quantize.convert_float(saved))
    seconds["convert_float"] = time.perf_counter() - start
    with native_output_to_debug_log("LiteRT"):  # the interpreter's one-off "Created ... XNNPACK delegate" line
        float_specs = specs_from_model(float_path, policy, normalization)
    int8_path, int8_specs, correction = None, None, None
    if calibration is not None:
        start = time.perf_counter()
        int8_path = work / "int8" / "model.tflite"
        int8_path.parent.mkdir()
        int8_path.write_bytes(quantize.convert_int8(saved, calibration, options.io, options.per_tensor, normalization, progress))
        seconds["convert_int8"] = time.perf_counter() - start
        int8_specs = specs_from_model(int8_path, policy, normalization)
        if options.bias_correction:
            # Only bias values change, so the specs read above still describe the model.
            start = time.perf_counter()
            correction = correct_int8_biases(int8_path, float_path, calibration, int8_specs[0], float_specs[0], progress)
            seconds["bias_correction"] = time.perf_counter() - start
    return BuiltModels(float_path, float_specs, int8_path, int8_specs, normalization, correction, options.io)


def correct_int8_biases(int8_path: Path, float_path: Path, calibration: np.ndarray, int8_input: InputSpec,
                        float_input: InputSpec, progress: Progress):
    """Rewrite ``int8_path`` with biases corrected against ``float_path`` on the first calibration images.

    The calibration sample is class round-robin, so its first images still cover every class.
    """
    from .bias_correction import DEFAULT_IMAGES, correct_biases

    corrected, report = correct_biases(int8_path.read_bytes(), float_path.read_bytes(), calibration[:DEFAULT_IMAGES],
                                       int8_input, float_input, progress)
    int8_path.write_bytes(corrected)
    return report
