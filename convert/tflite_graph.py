"""Reading a .tflite file's operators and tensors without TensorFlow.

The Edge TPU pre-flight needs more than the interpreter's tensor details: each
operator's builtin options (fused activation, strides, dilation, reduction
axes) and whether an input is a constant. The TFLite flatbuffer schema's Python
bindings ship inside ``ai_edge_litert`` (``schema_py_generated``, built on the
small ``flatbuffers`` package), so this works on any machine that can run the
device interpreter, and never imports TensorFlow.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeclass.device.errors import ModelError

# ai_edge_litert first (device and workstation installs both have it); the
# TensorFlow copy of the same generated file only as a last resort.
_SCHEMA_MODULES = ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated")
_TFLITE_MAGIC = b"TFL3"


def schema():
    """The TFLite flatbuffer schema module (object and table API), from ai_edge_litert or TensorFlow."""
    for name in _SCHEMA_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ModelError("reading .tflite files needs ai-edge-litert: pip install 'edgeclass[device]'")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the graph, as the flatbuffer describes it."""

    index: int
    name: str
    dtype: str  # "int8", "uint8", "int32", "float32", ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None  # -1 marks a dynamic dimension
    constant: bool  # holds data in the file (weights, biases, shape arguments)
    quantized: bool  # carries a quantization scale

    @property
    def dynamic(self) -> bool:
        return self.shape_signature is not None and any(d < 0 for d in self.shape_signature)


@dataclass(frozen=True)
class OpInfo:
    """One operator, in execution order."""

    index: int
    name: str  # builtin name ("CONV_2D") or the custom code ("edgetpu-custom-op")
    inputs: tuple[int, ...]  # tensor indices; -1 marks an omitted optional input
    outputs: tuple[int, ...]
    options: Any = None  # the schema's *OptionsT object, or None
    version: int = 1  # the operator code's version (the converter raises it with each new feature)

    def option(self, name: str, default=None):
        return getattr(self.options, name, default) if self.options is not None else default


@dataclass(frozen=True)
class Graph:
    """The main subgraph of a TFLite model."""

    path: Path
    ops: tuple[OpInfo, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: int
    constant_data: dict[int, bytes]  # small constant tensors only (shape/axis arguments)

    def tensor(self, index: int) -> TensorInfo | None:
        return self.tensors[index] if 0 <= index < len(self.tensors) else None

    def int_values(self, index: int) -> list[int] | None:
        """A small int32/int64 constant tensor's values (axes, paddings, strides), else None."""
        data = self.constant_data.get(index)
        tensor = self.tensor(index)
        if data is None or tensor is None or tensor.dtype not in ("int32", "int64"):
            return None
        width = 4 if tensor.dtype == "int32" else 8
        return [int.from_bytes(data[i : i + width], "little", signed=True) for i in range(0, len(data), width)]


# Shape and axis arguments are tiny; reading bigger constants (weights) is never needed.
_SMALL_CONSTANT = 256


def read_graph(path: str | Path) -> Graph:
    """Parse ``path`` into a :class:`Graph`; :class:`ModelError` if it is not a TFLite model."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: is a directory, expected a .tflite file") from None
    return parse_graph(buf, path)


def parse_graph(buf: bytes | bytearray, path: str | Path) -> Graph:
    """Parse a model already in memory; ``path`` names it in errors and in :attr:`Graph.path`."""
    path = Path(path)
    if len(buf) < 8 or buf[4:8] != _TFLITE_MAGIC:
        raise ModelError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    schema_module = schema()
    try:
        model = schema_module.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as exc:  # a corrupt flatbuffer raises anything from IndexError to struct.error
        raise ModelError(f"{path}: damaged TFLite flatbuffer ({type(exc).__name__}: {exc})") from None
    if not model.subgraphs:
        raise ModelError(f"{path}: the model has no subgraph")
    op_names = {v: k for k, v in vars(schema_module.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k.lower() for k, v in vars(schema_module.TensorType).items() if not k.startswith("_")}
    type_names.update({0: "float32", 1: "float16", 10: "float64"})
    buffers = model.buffers or []
    sub = model.subgraphs[0]

    tensors, small = [], {}
    for i, t in enumerate(sub.tensors or []):
        data = _buffer_bytes(buf, buffers, t.buffer)
        quant = t.quantization
        scale = getattr(quant, "scale", None) if quant is not None else None
        tensors.append(
            TensorInfo(
                index=i,
                name=_text(t.name),
                dtype=type_names.get(t.type, f"type{t.type}"),
                shape=tuple(int(d) for d in (t.shape if t.shape is not None else ())),
                shape_signature=tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else None,
                constant=data is not None,
                quantized=scale is not None and len(scale) > 0,
            )
        )
        if data is not None and len(data) <= _SMALL_CONSTANT:
            small[i] = data

    ops = []
    for i, op in enumerate(sub.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        # Codes above 127 live in builtinCode; older files only fill the deprecated byte.
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = _text(code.customCode) or "CUSTOM"
        ops.append(
            OpInfo(
                index=i,
                name=name,
                inputs=tuple(int(x) for x in (op.inputs if op.inputs is not None else ())),
                outputs=tuple(int(x) for x in (op.outputs if op.outputs is not None else ())),
                options=op.builtinOptions,
                version=int(code.version or 1),
            )
        )
    return Graph(
        path=path,
        ops=tuple(ops),
        tensors=tuple(tensors),
        inputs=tuple(int(x) for x in (sub.inputs if sub.inputs is not None else ())),
        outputs=tuple(int(x) for x in (sub.outputs if sub.outputs is not None else ())),
        subgraphs=len(model.subgraphs),
        constant_data=small,
    )


def _buffer_bytes(buf: bytes, buffers, index: int) -> bytes | None:
    """A tensor's constant data, or None for an activation (empty buffer)."""
    if index <= 0 or index >= len(buffers):
        return None  # buffer 0 is the empty sentinel by convention
    b = buffers[index]
    if b.data is not None and len(b.data) > 0:
        return bytes(b.data)
    # Models over 2 GB (and some converters) store data after the flatbuffer, by offset.
    if getattr(b, "size", 0) and getattr(b, "offset", 0) > 1:
        return buf[b.offset : b.offset + b.size]
    return None


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
