"""Empirical bias correction: remove the systematic error int8 rounding puts into each layer.

Rounding a layer's weights to int8 does not only add noise: with few weights
per output channel (a 3x3 depthwise kernel has nine) the rounding errors do not
average out, and each channel's output is shifted by a roughly constant amount.
The shifts add up layer after layer; on a fine-tuned MobileNetV2 0.35 they cost
about 3 points of validation accuracy.

The fix (Nagel et al., "Data-Free Quantization Through Weight Equalization and
Bias Correction", ICCV 2019, in its empirical form) runs the float and the int8
model on the same images, measures each int8 layer's mean output per channel
against the float layer's, and subtracts the difference from that layer's int32
bias. Layers are corrected in graph order, each measured with every earlier
layer already corrected, so a correction never compensates an error that is
about to disappear; the whole pass runs twice (see ``DEFAULT_SWEEPS``).

Only int32 bias values change: the graph, every other tensor, the quantization
parameters and the Edge TPU mapping stay exactly what the converter produced.
Needs only the TFLite interpreter, not TensorFlow.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np

from edgeclass.device.pipeline.interpreter import find_backend
from edgeclass.device.bundle import InputSpec
from edgeclass.device.pipeline.preprocess import Preprocessor

from .progress import Progress, no_progress
from .tflite_graph import Graph, OpInfo, _schema, parse_graph

log = logging.getLogger(__name__)

# Enough images for stable per-channel means (32, 64 and 200 gave the same
# result on flowers); each one is run once per corrected layer and sweep.
DEFAULT_IMAGES = 100
# A layer with a fused ReLU6 is measured after the clip, which hides part of
# its shift, so one pass under-corrects; a second pass takes most of the rest
# (mean |score error| on 360 flowers images 0.044 -> 0.034; a third: no gain).
DEFAULT_SWEEPS = 2
_LAYERS_WITH_BIAS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass(frozen=True)
class BiasCorrection:
    """What the correction did, for the manifest and the log."""

    layers: int  # layers whose bias was corrected
    images: int
    sweeps: int
    mean_abs_shift: float  # mean |int8 - float| channel mean before correction, in output units
    max_abs_shift: float
    last_sweep_shift: float  # the same mean, as the last sweep found it (what the earlier ones left)
    seconds: float

    def to_json(self) -> dict:
        return {"layers": self.layers, "images": self.images, "sweeps": self.sweeps,
                "mean_abs_shift": round(self.mean_abs_shift, 6), "max_abs_shift": round(self.max_abs_shift, 6),
                "last_sweep_shift": round(self.last_sweep_shift, 6), "seconds": round(self.seconds, 2)}


def _layers(graph: Graph) -> list[OpInfo]:
    """The graph's conv / depthwise / fully-connected operators, in execution order."""
    return [op for op in graph.ops if op.name in _LAYERS_WITH_BIAS]


def _pair_up(int8: Graph, float_graph: Graph) -> list[tuple[OpInfo, OpInfo]] | None:
    """The two graphs' layers side by side, or None unless they match one for one in output shape."""
    ours, theirs = _layers(int8), _layers(float_graph)
    pairs = list(zip(ours, theirs))
    if len(ours) != len(theirs) or any(
            int8.tensors[a.outputs[0]].shape != float_graph.tensors[b.outputs[0]].shape for a, b in pairs):
        return None
    return pairs


def _channel_means(model_bytes: bytes | bytearray, tensors: list[int], inputs: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Mean of each tensor in ``tensors`` per channel (last axis), dequantized, over every input."""
    backend = find_backend()
    with warnings.catch_warnings():
        # LiteRT warns that keeping every intermediate tensor is for debugging and costs
        # memory: reading intermediate tensors is the point here, and the model is small.
        warnings.simplefilter("ignore", UserWarning)
        interpreter = backend.interpreter_class(model_content=bytes(model_bytes), num_threads=None,
                                                experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    quant = {d["index"]: d["quantization"] for d in interpreter.get_tensor_details() if d["index"] in tensors}
    sums: dict[int, np.ndarray] = {}
    for x in inputs:
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        for t in tensors:
            value = interpreter.get_tensor(t)
            mean = value.reshape(-1, value.shape[-1]).mean(0, dtype=np.float64)
            if value.dtype != np.float32:
                scale, zero = quant[t]
                mean = (mean - zero) * scale
            sums[t] = sums.get(t, 0.0) + mean
    return {t: s / len(inputs) for t, s in sums.items()}


def correct_biases(int8_model: bytes, float_model: bytes, images: np.ndarray, int8_input: InputSpec,
                   float_input: InputSpec, progress: Progress = no_progress,
                   sweeps: int = DEFAULT_SWEEPS) -> tuple[bytes, BiasCorrection | None]:
    """Return ``int8_model`` with corrected biases, and what was done.

    ``images`` are resized uint8 RGB pixels (N, H, W, 3); each model sees them
    through the device's own :class:`Preprocessor` for its input spec. When
    the two graphs' layers do not pair up (not the same conversion), the int8
    model is returned unchanged with ``None``.
    """
    started = time.perf_counter()
    int8_graph, float_graph = parse_graph(int8_model, "int8 model"), parse_graph(float_model, "float model")
    pairs = _pair_up(int8_graph, float_graph)
    if pairs is None:
        log.warning("bias correction skipped: the int8 and float models' layers do not pair up (%d vs %d)",
                    len(_layers(int8_graph)), len(_layers(float_graph)))
        return int8_model, None
    to_int8, to_float = Preprocessor(int8_input), Preprocessor(float_input)
    int8_inputs = [to_int8(image) for image in images]
    reference = _channel_means(float_model, [b.outputs[0] for _, b in pairs], [to_float(i) for i in images])
    buf = bytearray(int8_model)  # the flatbuffer's bias vectors are edited in place
    model = _schema().Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    biases = []  # (layer output, float layer output, writable int32 view of the bias, its scales)
    for op, float_op in pairs:
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            continue  # no bias input
        tensor = graph.Tensors(op.inputs[2])
        quantization = tensor.Quantization()
        buffer = model.Buffers(tensor.Buffer())
        if quantization is None or quantization.ScaleLength() == 0 or buffer.DataLength() == 0:
            continue  # a float bias (nothing was rounded), or one computed at run time
        # A view into ``buf``: writing it rewrites the model's bias in place.
        view = buffer.DataAsNumpy().view(np.int32)
        biases.append((op.outputs[0], float_op.outputs[0], view, quantization.ScaleAsNumpy().astype(np.float64)))
    mean_shifts = []
    with progress("bias correction", sweeps * len(biases)) as advance:
        for _ in range(sweeps):
            shifts = []
            for output, float_output, bias, scales in biases:
                shift = _channel_means(buf, [output], int8_inputs)[output] - reference[float_output]
                steps = np.round(shift / scales).astype(np.int64)
                bias[:] = np.clip(bias.astype(np.int64) - steps, np.iinfo(np.int32).min, np.iinfo(np.int32).max)
                shifts.append(np.abs(shift))
                advance()
            mean_shifts.append(np.concatenate(shifts) if shifts else np.zeros(1))
    report = BiasCorrection(len(biases), len(images), sweeps, float(mean_shifts[0].mean()),
                            float(mean_shifts[0].max()), float(mean_shifts[-1].mean()), time.perf_counter() - started)
    log.info("bias correction: %d layers on %d images, mean channel shift %.4f (max %.4f), %.4f before the last "
             "of %d sweeps, %.1f s", report.layers, report.images, report.mean_abs_shift, report.max_abs_shift,
             report.last_sweep_shift, report.sweeps, report.seconds)
    return bytes(buf), report
