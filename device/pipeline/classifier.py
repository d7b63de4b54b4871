"""One interpreter, built once, that turns an input tensor into label scores."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..bundle import Bundle, InputSpec, OutputSpec
from ..errors import BundleError, ModelError
from .interpreter import edgetpu_build_advice, edgetpu_runtime_error, find_backend, make_interpreter

log = logging.getLogger(__name__)


class Scored(NamedTuple):
    """One label and its score."""

    label: str
    score: float


def top_k(scores: np.ndarray, labels: tuple[str, ...] | list[str], k: int) -> list[Scored]:
    """The ``k`` best labels, best first (ties broken by label index)."""
    k = max(1, min(k, len(scores)))
    # argpartition is O(n) on 1001 ImageNet classes; only the k survivors are sorted.
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.lexsort((best, -scores[best]))]
    return [Scored(labels[i], float(scores[i])) for i in best]


class EdgeTPU(str, Enum):
    """Whether to run the bundle's Edge TPU model."""

    AUTO = "auto"  # when the bundle has one and the runtime loads; else the CPU model
    ON = "on"  # required: fail if it cannot be used
    OFF = "off"  # always the CPU model


class Classifier:
    """Runs a bundle's model: ``scores(tensor)`` -> float32 score per label."""

    def __init__(self, model_path: Path, input_spec: InputSpec, output_spec: OutputSpec,
                 num_threads: int | None = None, edgetpu: bool = False, backend_name: str | None = None):
        backend = find_backend(backend_name)
        self.backend = backend.name
        self.model_path = Path(model_path)
        self.on_edgetpu = edgetpu
        self.num_threads = num_threads
        # Set by open_classifier: "auto" wanted the bundle's Edge TPU model but runs this CPU one.
        self.edgetpu_fallback = False
        self._interpreter = make_interpreter(self.model_path, num_threads=num_threads, edgetpu=edgetpu, backend=backend)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"{self.model_path}: has {len(inputs)} inputs and {len(outputs)} outputs, "
                "expected an image classifier with exactly one of each"
            )
        self._input, self._output = inputs[0], outputs[0]
        self.input_spec, self.output_spec = input_spec, output_spec
        self._check_against_manifest()
        self._out_scale = float(output_spec.scale)
        self._out_zero = int(output_spec.zero_point)

    def _check_against_manifest(self) -> None:
        """Refuse a model whose tensors differ from what the manifest promised."""
        name = self.model_path
        spec, out = self.input_spec, self.output_spec
        shape = tuple(int(d) for d in self._input["shape"])
        expected = (1, spec.height, spec.width, 3)
        if shape != expected:
            raise BundleError(f"{name}: input shape is {list(shape)} but bundle.json says {list(expected)}")
        dtype = np.dtype(self._input["dtype"]).name
        if dtype != spec.dtype:
            raise BundleError(f"{name}: input dtype is {dtype} but bundle.json says {spec.dtype}")
        if dtype != "float32":
            _check_quantization(name, "input", self._input, spec.scale, spec.zero_point)
        out_shape = [int(d) for d in self._output["shape"]]
        if out_shape[-1] != out.size or int(np.prod(out_shape)) != out.size:
            raise BundleError(f"{name}: output shape is {out_shape} but bundle.json and labels.txt say {out.size} scores")
        out_dtype = np.dtype(self._output["dtype"]).name
        if out_dtype != out.dtype:
            raise BundleError(f"{name}: output dtype is {out_dtype} but bundle.json says {out.dtype}")
        if out_dtype != "float32":  # scores are dequantized with the manifest's values
            _check_quantization(name, "output", self._output, out.scale, out.zero_point)

    @property
    def input_details(self) -> dict:
        return self._input

    def invoke(self, tensor: np.ndarray) -> None:
        """Run the model on a preprocessed (1, H, W, 3) tensor."""
        self._interpreter.set_tensor(self._input["index"], tensor)
        self._interpreter.invoke()

    def raw_output(self) -> np.ndarray:
        return self._interpreter.get_tensor(self._output["index"]).reshape(-1)

    def scores(self, tensor: np.ndarray) -> np.ndarray:
        """Float32 scores per label (probabilities) for one preprocessed tensor."""
        self.invoke(tensor)
        raw = self.raw_output()
        if self.output_spec.dtype == "float32":
            scores = raw.astype(np.float32)
        else:
            # int64 before subtracting the zero point: int8/uint8 arithmetic would wrap.
            scores = ((raw.astype(np.int64) - self._out_zero) * self._out_scale).astype(np.float32)
        if self.output_spec.scores == "logits":
            scores = np.exp(scores - scores.max())
            scores /= scores.sum()
        return scores

    def describe(self) -> str:
        where = "Edge TPU" if self.on_edgetpu else "CPU"
        return f"{self.model_path.name} on the {where} ({self.backend})"


def _check_quantization(model: Path, which: str, details: dict, scale: float, zero_point: int) -> None:
    actual_scale, actual_zero = details["quantization"]
    if not np.isclose(actual_scale, scale, rtol=1e-5) or int(actual_zero) != zero_point:
        raise BundleError(f"{model}: {which} quantization is (scale {actual_scale:g}, zero point {actual_zero}) "
                          f"but bundle.json says (scale {scale:g}, zero point {zero_point})")


def open_classifier(bundle: Bundle, num_threads: int | None = None, edgetpu: EdgeTPU = EdgeTPU.AUTO,
                    backend: str | None = None) -> Classifier:
    """Build the classifier for a bundle, choosing the Edge TPU model when it can run.

    Says once (in the log) which model runs where and why.
    """
    edgetpu = EdgeTPU(edgetpu)
    use_tpu = False
    if edgetpu is not EdgeTPU.OFF:
        if bundle.edgetpu_model_path is None:
            if edgetpu is EdgeTPU.ON:
                raise BundleError(f"{bundle.path}: --edgetpu on, but the bundle has no model_edgetpu.tflite (convert with --edgetpu)")
        else:
            problem = edgetpu_runtime_error()
            if problem is None:
                use_tpu = True
            elif edgetpu is EdgeTPU.ON:
                raise ModelError(f"{bundle.edgetpu_model_path}: --edgetpu on, but {problem}; install the Edge TPU runtime: "
                                 f"{edgetpu_build_advice(find_backend(backend))}")
            else:
                log.warning("Edge TPU model present but %s: running model.tflite on the CPU", problem)
    model = bundle.edgetpu_model_path if use_tpu else bundle.model_path
    try:
        classifier = Classifier(model, bundle.input, bundle.output, num_threads=num_threads, edgetpu=use_tpu, backend_name=backend)
    except ModelError:
        if not use_tpu or edgetpu is EdgeTPU.ON:
            raise
        log.warning("Edge TPU model failed to load; running model.tflite on the CPU")
        classifier = Classifier(bundle.model_path, bundle.input, bundle.output, num_threads=num_threads, backend_name=backend)
    classifier.edgetpu_fallback = edgetpu is EdgeTPU.AUTO and bundle.edgetpu_model_path is not None and not classifier.on_edgetpu
    log.info("model: %s", classifier.describe())
    return classifier
