"""A real, tiny uint8 TFLite classifier written without TensorFlow.

The device tests must run where only ``edgeclass[device]`` is installed, so
they cannot build models with TensorFlow. This writes a genuine flatbuffer
with LiteRT's own schema bindings (shipped in ai-edge-litert): the
interpreter loads and runs it like any converted model.

The network: MEAN over height and width (the frame's average colour) ->
FULLY_CONNECTED -> SOFTMAX, all uint8-quantized. Each class has a colour; a
frame is classified as the class whose colour it is closest to in direction,
so a red frame scores "red" near 1.0. Small enough to reason about, real
enough that a wrong preprocessing step (BGR instead of RGB, a bad crop)
changes the answer.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
}


def _quant(scale: float, zero_point: int):
    q = schema.QuantizationParametersT()
    q.scale = [float(scale)]
    q.zeroPoint = [int(zero_point)]
    return q


def _tensor(name, shape, dtype, buffer, quant=None):
    t = schema.TensorT()
    t.name, t.shape, t.type, t.buffer, t.quantization = name, list(shape), dtype, buffer, quant
    return t


def _buffer(data: bytes | None = None):
    b = schema.BufferT()
    b.data = None if data is None else np.frombuffer(data, dtype=np.uint8)
    return b


def _opcode(code: int):
    oc = schema.OperatorCodeT()
    oc.builtinCode = code
    oc.deprecatedBuiltinCode = code
    oc.version = 1
    return oc


def build_colour_classifier(size: int = 32, labels: tuple[str, ...] = tuple(COLOURS), gain: float = 0.05) -> bytes:
    """Flatbuffer bytes of a uint8 ``(1, size, size, 3) -> (1, len(labels))`` classifier."""
    colours = np.array([COLOURS[label] for label in labels], dtype=np.float64)
    # logit_j = gain * (x . (c_j - mean colour of c_j)): zero-mean rows make the
    # answer depend on hue, not brightness.
    weights = gain * (colours - colours.mean(axis=1, keepdims=True)) / 255.0 * 3
    w_scale = np.abs(weights).max() / 127.0
    w_q = np.clip(np.round(weights / w_scale) + 128, 0, 255).astype(np.uint8)
    in_scale = 1.0  # the input is the raw pixel byte
    logit_range = np.abs(weights).sum(axis=1).max() * 255 * 1.1
    fc_scale = 2 * logit_range / 255.0
    n = len(labels)

    tensors = [
        _tensor("image", (1, size, size, 3), schema.TensorType.UINT8, 0, _quant(in_scale, 0)),
        _tensor("mean_axes", (2,), schema.TensorType.INT32, 1),
        _tensor("mean_colour", (1, 3), schema.TensorType.UINT8, 0, _quant(in_scale, 0)),
        _tensor("weights", (n, 3), schema.TensorType.UINT8, 2, _quant(w_scale, 128)),
        _tensor("bias", (n,), schema.TensorType.INT32, 3, _quant(in_scale * w_scale, 0)),
        _tensor("logits", (1, n), schema.TensorType.UINT8, 0, _quant(fc_scale, 128)),
        _tensor("scores", (1, n), schema.TensorType.UINT8, 0, _quant(1.0 / 256.0, 0)),
    ]
    buffers = [
        _buffer(),
        _buffer(np.array([1, 2], dtype="<i4").tobytes()),
        _buffer(w_q.tobytes()),
        _buffer(np.zeros(n, dtype="<i4").tobytes()),
    ]

    mean = schema.OperatorT()
    mean.opcodeIndex, mean.inputs, mean.outputs = 0, [0, 1], [2]
    mean.builtinOptionsType = schema.BuiltinOptions.ReducerOptions
    mean.builtinOptions = schema.ReducerOptionsT()
    mean.builtinOptions.keepDims = False

    fc = schema.OperatorT()
    fc.opcodeIndex, fc.inputs, fc.outputs = 1, [2, 3, 4], [5]
    fc.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    fc.builtinOptions = schema.FullyConnectedOptionsT()

    softmax = schema.OperatorT()
    softmax.opcodeIndex, softmax.inputs, softmax.outputs = 2, [5], [6]
    softmax.builtinOptionsType = schema.BuiltinOptions.SoftmaxOptions
    softmax.builtinOptions = schema.SoftmaxOptionsT()
    softmax.builtinOptions.beta = 1.0

    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs = tensors, [0], [6]
    graph.operators = [mean, fc, softmax]
    graph.name = "main"

    model = schema.ModelT()
    model.version = 3
    model.operatorCodes = [
        _opcode(schema.BuiltinOperator.MEAN),
        _opcode(schema.BuiltinOperator.FULLY_CONNECTED),
        _opcode(schema.BuiltinOperator.SOFTMAX),
    ]
    model.subgraphs = [graph]
    model.buffers = buffers
    model.description = "edgeclass test colour classifier"

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_colour_classifier(directory: Path, size: int = 32) -> tuple[Path, Path]:
    """Write ``colour.tflite`` and ``colour_labels.txt`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / "colour.tflite"
    labels = directory / "colour_labels.txt"
    model.write_bytes(build_colour_classifier(size))
    labels.write_text("\n".join(COLOURS) + "\n")
    return model, labels
