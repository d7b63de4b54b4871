"""Edge TPU pre-flight: which ops of a TFLite model the Edge TPU compiler will map.

Predicts, from the model file alone, what ``edgetpu_compiler`` would do, so a
user learns *before* installing the compiler (or buying the hardware) that the
model will not run on the TPU, and why. The rules follow Coral's published
requirements (coral.ai "TensorFlow models on the Edge TPU"):

- every tensor an op reads or writes at run time is 8-bit (int8/uint8) and
  carries quantization parameters; float anywhere means the op stays on the CPU
  ("Model not quantized" when nothing is);
- tensor sizes are fixed at compile time (no dynamic dimension);
- only the 3 innermost dimensions of a tensor may be larger than 1;
- the op is in Coral's operator table and meets that op's listed limits
  (no fused activation on pooling/concatenation, reductions and padding only
  along x/y, softmax over a 1-D vector of at most 16,000 values, ...);
- the compiler cuts the graph once: from the first op it cannot map, that op
  and every op after it run on the CPU, even ops it could have mapped.

Unsupported ops *before* the first mappable op (a float->int8 QUANTIZE on a
float-input model) stay on the CPU without ending the TPU segment, as the real
compiler does with a model's input quantize.

Each operator's *version* is checked too (:mod:`.edgetpu_versions`): the
compiler refuses a whole model that holds a version newer than it knows, so
an op whose version no compiled model has shown is reported as "unverified:
compiler 16 may reject MEAN v3", never as "will run", and a version the
compiler is known to refuse means nothing runs on the TPU.

This module reads the flatbuffer with :mod:`edgeclass.convert.tflite_graph`
and never imports TensorFlow.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .edgetpu_versions import check_version
from .tflite_graph import Graph, OpInfo, TensorInfo, read_graph

log = logging.getLogger(__name__)

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
EIGHT_BIT = ("int8", "uint8")
# Constant (compile-time) operands that may be wider: int32 biases and int32/int64
# shape, axis and padding arguments.
CONSTANT_DTYPES = ("int8", "uint8", "int32", "int64")
SOFTMAX_MAX_ELEMENTS = 16000

# Coral's Edge TPU operator table (TFLite builtin names). Ops with limits have a
# check below; the rest need only 8-bit, static, rank-3-or-less tensors.
SUPPORTED_OPS = frozenset(
    {
        "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS", "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC",
        "UNIDIRECTIONAL_SEQUENCE_LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM",
        "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU",
        "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE",
        "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
    }
)
# Ops people often expect to work, with the reason they do not, in the user's terms.
KNOWN_UNSUPPORTED = {
    "HARD_SWISH": "HARD_SWISH (hard-swish activation, used by MobileNetV3) is not in the Edge TPU's operator "
                  "table; use MobileNetV3 minimalistic=True or MobileNetV2",
    "DEQUANTIZE": "DEQUANTIZE produces float32; the Edge TPU runs only 8-bit ops (use uint8/int8 model output)",
    "GELU": "GELU is not in the Edge TPU's operator table",
    "SWISH": "SWISH is not in the Edge TPU's operator table",
    "LEAKY_RELU": "LEAKY_RELU is not in the Edge TPU's operator table (PRELU with a constant alpha is)",
}

@dataclass(frozen=True)
class OpVerdict:
    """What the pre-flight predicts for one op."""

    index: int
    name: str
    on_tpu: bool  # predicted to run on the TPU, its version included
    reason: str | None = None  # why it runs on the CPU (None when on the TPU)
    supported: bool = True  # meets the TPU's rules on its own (may still be on the CPU after a cut)
    version: int = 1
    unverified: str | None = None  # meets the rules, but no compiled model shows the compiler accepts this version

    @property
    def mappable(self) -> bool:
        """On the TPU if the compiler accepts its version (True for a known version)."""
        return self.on_tpu or self.unverified is not None


@dataclass(frozen=True)
class Preflight:
    """The pre-flight result for one model."""

    model: Path
    ops: tuple[OpVerdict, ...]
    already_compiled: bool = False
    refused: str | None = None  # an operator version the compiler refuses: the model does not compile

    @property
    def total(self) -> int:
        return len(self.ops)

    @property
    def on_tpu(self) -> int:
        return sum(v.on_tpu for v in self.ops)

    @property
    def fully_mapped(self) -> bool:
        return self.total > 0 and self.on_tpu == self.total

    @property
    def unverified(self) -> list[OpVerdict]:
        return [v for v in self.ops if v.unverified]

    def unverified_versions(self) -> list[str]:
        """``["MEAN v3", ...]``: each operator version no compiled model vouches for, once."""
        return list(dict.fromkeys(f"{v.name} v{v.version}" for v in self.unverified))

    @property
    def first_cpu_op(self) -> OpVerdict | None:
        """The op where the graph falls back to the CPU (the compiler's cut point)."""
        started = False
        for verdict in self.ops:
            if verdict.mappable:
                started = True
            elif started:
                return verdict
        # No cut after a TPU segment: report the first CPU op at all, if any.
        return next((v for v in self.ops if not v.mappable), None)

    def summary(self) -> str:
        """One line: the verdict a user needs."""
        if self.already_compiled:
            return f"{self.model.name}: already compiled for the Edge TPU (holds {EDGETPU_CUSTOM_OP})"
        if self.total == 0:
            return f"{self.model.name}: the model has no operators"
        head = f"{self.model.name}: {self.on_tpu} of {self.total} ops will run on the Edge TPU"
        if self.refused:
            return head + f": {self.refused}"
        unverified = self.unverified
        if unverified:
            versions = ", ".join(self.unverified_versions())
            head += (f", {len(unverified)} more only if the compiler accepts their version "
                     f"(unverified: compiler 16 may reject {versions})")
        first = self.first_cpu_op
        if first is None:
            return head + ("" if unverified else " (fully mapped)")
        return head + f"; falls back to the CPU at op #{first.index} {first.name}: {first.reason}"

    def table(self) -> list[tuple[str, int, str]]:
        """(op name, count, status) rows, like the compiler's operator table."""
        rows = Counter((f"{v.name} v{v.version}", "Mapped to Edge TPU" if v.on_tpu else (v.unverified or v.reason or "CPU"))
                       for v in self.ops)
        return [(name, count, status) for (name, status), count in sorted(rows.items())]

    def to_json(self) -> dict:
        """The manifest's ``edgetpu.preflight`` section."""
        first = self.first_cpu_op
        return {
            "ops_total": self.total,
            "ops_on_tpu": self.on_tpu,
            "ops_unverified": len(self.unverified),
            "fully_mapped": self.fully_mapped,
            "first_cpu_op": None if first is None else {"index": first.index, "op": first.name, "reason": first.reason},
            "unverified_versions": self.unverified_versions(),
            "refused": self.refused,
            "op_versions": dict(sorted({v.name: v.version for v in self.ops}.items())),
            "verdict": self.summary(),
            "rules": "Coral Edge TPU operator table and constraints, operator versions against Coral's compiled models "
                     "(edgeclass pre-flight, not the compiler)",
        }


def check_edgetpu(model_path: str | Path) -> Preflight:
    """Predict which ops of ``model_path`` the Edge TPU compiler will map."""
    graph = read_graph(model_path)
    if any(op.name == EDGETPU_CUSTOM_OP for op in graph.ops):
        verdicts = tuple(
            OpVerdict(op.index, op.name, op.name == EDGETPU_CUSTOM_OP,
                      None if op.name == EDGETPU_CUSTOM_OP else "left on the CPU by the compiler")
            for op in graph.ops
        )
        return Preflight(graph.path, verdicts, already_compiled=True)

    versions = {op.index: check_version(op.name, op.version) for op in graph.ops}
    refused = next((check.note for check in versions.values() if check.status == "refused"), None)
    if refused is not None:
        # The compiler stops at parsing: nothing of this model reaches the TPU.
        verdicts = tuple(OpVerdict(op.index, op.name, False, versions[op.index].note or refused, supported=False,
                                   version=op.version) for op in graph.ops)
        return Preflight(graph.path, verdicts, refused=refused)

    verdicts: list[OpVerdict] = []
    started = cut = False
    for op in graph.ops:
        reason = op_problem(graph, op)
        if graph.subgraphs > 1 and reason is None and op.name in ("WHILE", "IF", "CALL_ONCE"):
            reason = f"{op.name} calls another subgraph; the Edge TPU runs a single graph"
        if cut:
            why = reason or f"after the CPU fallback at op #{first_cut} (the compiler maps one segment)"
            verdicts.append(OpVerdict(op.index, op.name, False, why, supported=reason is None, version=op.version))
        elif reason is None:
            started = True
            unverified = versions[op.index].note if versions[op.index].status == "unverified" else None
            verdicts.append(OpVerdict(op.index, op.name, unverified is None, version=op.version, unverified=unverified))
        else:
            verdicts.append(OpVerdict(op.index, op.name, False, reason, supported=False, version=op.version))
            if started:
                cut, first_cut = True, op.index
    result = Preflight(graph.path, tuple(verdicts))
    log.debug("pre-flight: %s", result.summary())
    return result


def op_problem(graph: Graph, op: OpInfo) -> str | None:
    """Why ``op`` cannot run on the Edge TPU, or None when it meets every rule."""
    if op.name in KNOWN_UNSUPPORTED:
        return KNOWN_UNSUPPORTED[op.name]
    if op.name not in SUPPORTED_OPS:
        return f"{op.name} is not in the Edge TPU's operator table"
    problem = _tensor_problem(graph, op)
    if problem:
        return problem
    check = _OP_CHECKS.get(op.name)
    return check(graph, op) if check else None


def _tensor_problem(graph: Graph, op: OpInfo) -> str | None:
    for role, indices in (("input", op.inputs), ("output", op.outputs)):
        for index in indices:
            tensor = graph.tensor(index)
            if tensor is None:  # -1: an omitted optional input
                continue
            if tensor.constant:
                if tensor.dtype not in CONSTANT_DTYPES:
                    return f"constant {tensor.name!r} is {tensor.dtype}; the Edge TPU needs 8-bit weights (full-integer quantization)"
                continue
            if tensor.dtype not in EIGHT_BIT:
                return (f"{role} {tensor.name!r} is {tensor.dtype}; the Edge TPU runs only 8-bit quantized "
                        "tensors (Model not quantized: convert with full-integer int8 quantization)")
            if not tensor.quantized:
                return f"{role} {tensor.name!r} is {tensor.dtype} without quantization parameters"
            if tensor.dynamic:
                return f"{role} {tensor.name!r} has a dynamic shape {list(tensor.shape_signature)}; the Edge TPU needs sizes fixed at compile time"
            if _outer_dims(tensor):
                return (f"{role} {tensor.name!r} has shape {list(tensor.shape)}; only the 3 innermost dimensions "
                        "may be larger than 1 on the Edge TPU")
    return None


def _outer_dims(tensor: TensorInfo) -> bool:
    return len(tensor.shape) > 3 and any(d > 1 for d in tensor.shape[:-3])


def _rank(graph: Graph, index: int) -> int:
    tensor = graph.tensor(index)
    return len(tensor.shape) if tensor is not None else 0


def _no_fused_activation(graph: Graph, op: OpInfo) -> str | None:
    if op.option("fusedActivationFunction", 0):
        return f"{op.name} with a fused activation is not supported on the Edge TPU"
    return None


def _concatenation(graph: Graph, op: OpInfo) -> str | None:
    problem = _no_fused_activation(graph, op)
    if problem:
        return problem
    constants = [i for i in op.inputs if graph.tensor(i) is not None and graph.tensor(i).constant]
    if constants and len(op.inputs) != 2:
        return "CONCATENATION with a constant input must have exactly 2 inputs (a zero-padding concat)"
    return None


def _conv(graph: Graph, op: OpInfo) -> str | None:
    if op.option("dilationWFactor", 1) != op.option("dilationHFactor", 1):
        return "CONV_2D needs the same dilation in x and y on the Edge TPU"
    return None


def _depthwise(graph: Graph, op: OpInfo) -> str | None:
    if op.option("dilationWFactor", 1) != 1 or op.option("dilationHFactor", 1) != 1:
        return "DEPTHWISE_CONV_2D with dilation is not supported on the Edge TPU"
    return None


def _fully_connected(graph: Graph, op: OpInfo) -> str | None:
    if op.option("weightsFormat", 0) != 0:
        return "FULLY_CONNECTED supports only the default weights format on the Edge TPU"
    out = graph.tensor(op.outputs[0]) if op.outputs else None
    if out is not None and sum(d > 1 for d in out.shape) > 1:
        return f"FULLY_CONNECTED output has shape {list(out.shape)}; the Edge TPU needs a one-dimensional output"
    return None


def _axes(graph: Graph, index: int, rank: int) -> list[int] | None:
    values = graph.int_values(index)
    return None if values is None else [a % rank if rank else a for a in values]


def _reduction(graph: Graph, op: OpInfo, xy_only: bool) -> str | None:
    rank = _rank(graph, op.inputs[0])
    axes = _axes(graph, op.inputs[1], rank) if len(op.inputs) > 1 else None
    if axes is None:
        return f"{op.name} reduction axes are not a compile-time constant"
    if rank == 4 and 0 in axes:
        return f"{op.name} reduces along the batch dimension (axes {axes}); not supported on the Edge TPU"
    if xy_only and rank == 4 and any(a not in (1, 2) for a in axes):
        return f"{op.name} reduces along axes {axes}; the Edge TPU supports reduction along x and/or y only"
    return None


def _pad(graph: Graph, op: OpInfo) -> str | None:
    rank = _rank(graph, op.inputs[0])
    values = graph.int_values(op.inputs[1]) if len(op.inputs) > 1 else None
    if values is None:
        return "PAD paddings are not a compile-time constant"
    pairs = [values[i : i + 2] for i in range(0, len(values), 2)]
    if rank == 4 and (any(pairs[0]) or any(pairs[3])):
        return f"PAD pads the batch or channel dimension ({pairs}); the Edge TPU pads along x and y only"
    return None


def _softmax(graph: Graph, op: OpInfo) -> str | None:
    tensor = graph.tensor(op.inputs[0])
    big = [d for d in tensor.shape if d > 1]
    if len(big) > 1:
        return f"SOFTMAX input has shape {list(tensor.shape)}; the Edge TPU supports a 1-D input only"
    if big and big[0] > SOFTMAX_MAX_ELEMENTS:
        return f"SOFTMAX over {big[0]} values; the Edge TPU supports at most {SOFTMAX_MAX_ELEMENTS}"
    return None


def _strided_slice(graph: Graph, op: OpInfo) -> str | None:
    strides = graph.int_values(op.inputs[3]) if len(op.inputs) > 3 else None
    if strides is None or any(s != 1 for s in strides):
        return f"STRIDED_SLICE strides {strides}; the Edge TPU needs all strides equal to 1"
    if op.option("ellipsisMask", 0) or op.option("newAxisMask", 0):
        return "STRIDED_SLICE with an ellipsis or new-axis mask is not supported on the Edge TPU"
    return None


def _not_batch_axis(graph: Graph, op: OpInfo) -> str | None:
    if op.name == "SPLIT":
        values = graph.int_values(op.inputs[0])
        axis = values[0] if values else None
        rank = _rank(graph, op.inputs[1])
    else:  # PACK: the axis is an option; the output has one more dimension
        axis = op.option("axis", 0)
        rank = _rank(graph, op.outputs[0])
    if axis is None:
        return f"{op.name} axis is not a compile-time constant"
    if rank and axis % rank == 0 and rank == 4:
        return f"{op.name} along the batch dimension is not supported on the Edge TPU"
    return None


_OP_CHECKS: dict[str, Callable[[Graph, OpInfo], str | None]] = {
    "AVERAGE_POOL_2D": _no_fused_activation,
    "MAX_POOL_2D": _no_fused_activation,
    "CONCATENATION": _concatenation,
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _depthwise,
    "FULLY_CONNECTED": _fully_connected,
    "MEAN": lambda g, op: _reduction(g, op, xy_only=True),
    "SUM": lambda g, op: _reduction(g, op, xy_only=False),
    "REDUCE_MAX": lambda g, op: _reduction(g, op, xy_only=False),
    "REDUCE_MIN": lambda g, op: _reduction(g, op, xy_only=False),
    "PAD": _pad,
    "SOFTMAX": _softmax,
    "STRIDED_SLICE": _strided_slice,
    "SPLIT": _not_batch_axis,
    "PACK": _not_batch_axis,
}
