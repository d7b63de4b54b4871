"""edgeclass.device.bundle: the one contract between the converter and the device.

A bundle is a directory::

    bundle.json            manifest (schema_version 1), see :func:`load_bundle`
    model.tflite           full-integer (or float) TFLite classifier
    model_edgetpu.tflite   optional: the same model compiled for the Edge TPU
    labels.txt             one label per line, line i = output index i
    report/                optional: evaluation report files

The manifest records everything the device must not guess (input geometry,
colour order, quantization, normalization, resize policy, output format) and
the sha256 of every file. :func:`load_bundle` refuses anything that does not
match, with one line naming the file and both values.

A bundle is data, never instructions: it holds ``bundle.json`` and the regular
files it lists, nothing else, within size caps (:mod:`.contents`).

Owns: the manifest schema (:mod:`.manifest`), what a bundle may hold and
copying exactly that (:mod:`.contents`), loading and verifying
(:mod:`.load`), writing (:mod:`.write`). May import: ``edgeclass.device.errors``
and ``edgeclass.device.files`` only; every other room imports this one.
Checks that need the interpreter (the model's own tensors, a test inference)
live in :mod:`edgeclass.device.pipeline.verify`.
"""

from .load import Bundle, load_bundle, read_labels, sha256_file
from .manifest import (
    EDGETPU_MODEL,
    LABELS,
    MANIFEST,
    MODEL,
    OUTPUT_DTYPES,
    REPORT_DIR,
    SCHEMA_VERSION,
    SCORE_KINDS,
    InputSpec,
    OutputSpec,
    ResizePolicy,
)
from .write import write_bundle

__all__ = [
    "Bundle", "load_bundle", "read_labels", "sha256_file", "write_bundle",
    "InputSpec", "OutputSpec", "ResizePolicy",
    "EDGETPU_MODEL", "LABELS", "MANIFEST", "MODEL", "OUTPUT_DTYPES", "REPORT_DIR", "SCHEMA_VERSION", "SCORE_KINDS",
]
