"""A real, tiny quantized TFLite classifier (uint8 or int8 I/O) written without TensorFlow.

The device tests must run where only ``edgeclass[device]`` is installed, so
they cannot build models with TensorFlow. This writes a genuine flatbuffer
with LiteRT's own schema bindings (shipped in ai-edge-litert): the
interpreter loads and runs it like any converted model.

The network: MEAN over height and width (the frame's average colour) ->
FULLY_CONNECTED -> SOFTMAX, all uint8-quantized, or all int8 with int8 input
and output as ``convert --io int8`` makes them (input scale 1, zero point -128:
the pixel byte minus 128). Each class has a colour; a
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


def build_colour_classifier(size: int = 32, labels: tuple[str, ...] = tuple(COLOURS), gain: float = 0.05,
                            io: str = "uint8") -> bytes:
    """Flatbuffer bytes of a ``(1, size, size, 3) -> (1, len(labels))`` classifier with ``io`` (uint8/int8) tensors.

    int8 follows TFLite's int8 rules: weights symmetric (zero point 0), the
    softmax output at scale 1/256 with zero point -128.
    """
    if io not in ("uint8", "int8"):
        raise ValueError(f"io must be uint8 or int8, got {io!r}")
    colours = np.array([COLOURS[label] for label in labels], dtype=np.float64)
    # logit_j = gain * (x . (c_j - mean colour of c_j)): zero-mean rows make the
    # answer depend on hue, not brightness.
    weights = gain * (colours - colours.mean(axis=1, keepdims=True)) / 255.0 * 3
    w_scale = np.abs(weights).max() / 127.0
    in_scale = 1.0  # the input is the raw pixel byte (int8: the byte minus 128)
    logit_range = np.abs(weights).sum(axis=1).max() * 255 * 1.1
    fc_scale = 2 * logit_range / 255.0
    n = len(labels)
    if io == "uint8":
        t, offset = schema.TensorType.UINT8, 128  # uint8 stores q + 128 where int8 stores q
        w_q = np.clip(np.round(weights / w_scale) + 128, 0, 255).astype(np.uint8)
    else:
        t, offset = schema.TensorType.INT8, 0
        w_q = np.clip(np.round(weights / w_scale), -127, 127).astype(np.int8)
    pixel_zero = 0 if io == "uint8" else -128

    tensors = [
        _tensor("image", (1, size, size, 3), t, 0, _quant(in_scale, pixel_zero)),
        _tensor("mean_axes", (2,), schema.TensorType.INT32, 1),
        _tensor("mean_colour", (1, 3), t, 0, _quant(in_scale, pixel_zero)),
        _tensor("weights", (n, 3), t, 2, _quant(w_scale, offset)),
        _tensor("bias", (n,), schema.TensorType.INT32, 3, _quant(in_scale * w_scale, 0)),
        _tensor("logits", (1, n), t, 0, _quant(fc_scale, offset)),
        _tensor("scores", (1, n), t, 0, _quant(1.0 / 256.0, offset - 128)),
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


def write_colour_classifier(directory: Path, size: int = 32, io: str = "uint8") -> tuple[Path, Path]:
    """Write ``colour.tflite`` (``colour_int8.tflite`` for int8 I/O) and ``colour_labels.txt`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / ("colour.tflite" if io == "uint8" else f"colour_{io}.tflite")
    labels = directory / "colour_labels.txt"
    model.write_bytes(build_colour_classifier(size, io=io))
    labels.write_text("\n".join(COLOURS) + "\n")
    return model, labels
