"""Which TFLite operator versions Coral's Edge TPU compiler is known to accept, and which it refuses.

Every builtin operator in a ``.tflite`` file carries a version, raised by the
converter when an operator gains a feature (int8 instead of uint8, per-channel
weights, a new fused option). The Edge TPU compiler 16.0 (16.0.384591198, the
last release) refuses any model holding a version its parser does not know::

    ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'.
    ERROR: Registration failed.  Invalid model: model.tflite

So an operator can meet every rule of Coral's operator table and still stop
the whole model from compiling. The pre-flight therefore compares each
operator's version with evidence, in three classes:

- **known**: the version is at most the newest one found in a model that
  Coral compiled for the Edge TPU (:data:`KNOWN_TO_COMPILE`; a newer parser
  still reads every older version of an operator);
- **refused**: compiler 16.0 was reported to refuse this version or an
  older one (:data:`REFUSED_FROM`, with the report);
- **unverified**: anything else. It may compile; nobody has shown that it does.

Evidence for :data:`KNOWN_TO_COMPILE` (the operator codes of each source model
whose ``*_edgetpu.tflite`` twin Coral published beside it; the compiler that
made a twin is not recorded in the file):

- ``../shared/data/coral`` (Coral's test data): ``mobilenet_v1_0.25_128_quant``
  and ``mobilenet_v1_0.5_160_quant`` with their ``_edgetpu`` twins;
- github.com/google-coral/test_data at 104342d ("Release Grouper",
  2021-07-26): ``tf2_mobilenet_v2_1.0_224_ptq`` (the same file as in
  ``../shared/data/coral``; its ``_edgetpu`` twin is in that tree),
  ``keras_lstm_mnist_ptq``, ``movenet_single_pose_lightning_ptq``,
  ``posenet/*_16_quant_decoder``, ``deeplabv3_mnv2_pascal_quant``,
  ``deeplab_mobilenet_edgetpu_slim_cityscapes_quant``,
  ``mobilenet_v1_1.0_224_quant_embedding_extractor`` and
  ``tools/split_concat``, each with its ``_edgetpu`` twin.

Evidence for :data:`REFUSED_FROM`: compiler 16.0.384591198's own error
message in github.com/google-coral/edgetpu issues #631 (CONV_2D v6), #845
(TRANSPOSE_CONV v4), #879 (QUANTIZE v3) and google-coral/libedgetpu#71 (EXP v2).

Coral's documentation (coral.ai/docs/edgetpu/models-intro, "Supported
operations") lists operators but no versions; it is the source of the
operator table in :mod:`.edgetpu_ops`, not of this one.
"""

from __future__ import annotations

from typing import NamedTuple

COMPILER = "16"

# operator -> (newest version seen in a source model Coral compiled, that model)
KNOWN_TO_COMPILE: dict[str, tuple[int, str]] = {
    "ADD": (2, "movenet_single_pose_lightning_ptq"),
    "ARG_MAX": (2, "movenet_single_pose_lightning_ptq"),
    "AVERAGE_POOL_2D": (1, "mobilenet_v1_0.25_128_quant"),
    "CAST": (1, "movenet_single_pose_lightning_ptq"),
    "CONCATENATION": (2, "movenet_single_pose_lightning_ptq"),
    "CONV_2D": (3, "movenet_single_pose_lightning_ptq"),
    "DEPTHWISE_CONV_2D": (3, "movenet_single_pose_lightning_ptq"),
    "DEQUANTIZE": (2, "movenet_single_pose_lightning_ptq"),
    "DIV": (1, "movenet_single_pose_lightning_ptq"),
    "FLOOR_DIV": (1, "movenet_single_pose_lightning_ptq"),
    "FULLY_CONNECTED": (4, "keras_lstm_mnist_ptq"),
    "GATHER_ND": (1, "movenet_single_pose_lightning_ptq"),
    "LOGISTIC": (2, "movenet_single_pose_lightning_ptq"),
    "MEAN": (2, "tf2_mobilenet_v2_1.0_224_ptq"),
    "MUL": (2, "movenet_single_pose_lightning_ptq"),
    "PACK": (2, "movenet_single_pose_lightning_ptq"),
    "PAD": (2, "posenet_mobilenet_v1_075_353_481_16_quant_decoder"),
    "QUANTIZE": (1, "keras_lstm_mnist_ptq"),
    "RESHAPE": (1, "mobilenet_v1_0.25_128_quant"),
    "RESIZE_BILINEAR": (3, "movenet_single_pose_lightning_ptq"),
    "SOFTMAX": (2, "keras_lstm_mnist_ptq"),
    "SPLIT": (1, "split_concat"),
    "SQRT": (1, "movenet_single_pose_lightning_ptq"),
    "SUB": (2, "movenet_single_pose_lightning_ptq"),
    "TILE": (1, "deeplab_mobilenet_edgetpu_slim_cityscapes_quant"),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (1, "keras_lstm_mnist_ptq"),
    "UNPACK": (2, "movenet_single_pose_lightning_ptq"),
}

# operator -> (the oldest version compiler 16.0 was seen to refuse, the report)
REFUSED_FROM: dict[str, tuple[int, str]] = {
    "CONV_2D": (6, "google-coral/edgetpu#631"),
    "TRANSPOSE_CONV": (4, "google-coral/edgetpu#845"),
    "QUANTIZE": (3, "google-coral/edgetpu#879"),
    "EXP": (2, "google-coral/libedgetpu#71"),
}


class VersionCheck(NamedTuple):
    """What is known about one operator version: ``known``, ``refused`` or ``unverified``, and why."""

    status: str
    note: str | None  # None for a known version


def check_version(op: str, version: int) -> VersionCheck:
    """Compare ``op`` at ``version`` with the evidence above."""
    refused = REFUSED_FROM.get(op)
    if refused is not None and version >= refused[0]:
        return VersionCheck("refused", f"compiler {COMPILER} refuses {op} v{version} and the model does not compile "
                                       f"({op} v{refused[0]} and newer: \"Didn't find op for builtin opcode\", {refused[1]})")
    known = KNOWN_TO_COMPILE.get(op)
    if known is not None and version <= known[0]:
        return VersionCheck("known", None)
    return VersionCheck("unverified", f"unverified: compiler {COMPILER} may reject {op} v{version}")
