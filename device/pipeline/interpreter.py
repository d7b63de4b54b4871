"""Finding a TFLite interpreter and, when there is one, the Edge TPU.

Backends are tried in order: ``ai_edge_litert`` (LiteRT, the maintained
successor of tflite-runtime), ``tflite_runtime`` (last released 2023, needs
numpy<2), then ``tensorflow.lite`` (a workstation with TensorFlow). The first
that imports wins; ``EDGECLASS_INTERPRETER`` forces one by name.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelError

log = logging.getLogger(__name__)

BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow")
_MODULES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}
# The distributions that install each backend (for reporting which version ran).
_DISTRIBUTIONS = {
    "ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "tflite_runtime": ("tflite-runtime",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly"),
}
EDGETPU_OP = b"edgetpu-custom-op"
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
    platform.system(), "libedgetpu.so.1"
)


@dataclass(frozen=True)
class Backend:
    """An importable interpreter implementation."""

    name: str
    interpreter_class: Callable[..., Any]
    load_delegate: Callable[..., Any]


def find_backend(preferred: str | None = None) -> Backend:
    """Return the first interpreter backend that imports (or ``preferred``)."""
    preferred = preferred or os.environ.get("EDGECLASS_INTERPRETER") or None
    if preferred is not None and preferred not in BACKENDS:
        raise ModelError(f"interpreter {preferred!r} is not one of {', '.join(BACKENDS)}")
    failures = []
    for name in (preferred,) if preferred else BACKENDS:
        try:
            module = importlib.import_module(_MODULES[name])
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
            continue
        if name == "tensorflow":
            return Backend(name, module.Interpreter, module.experimental.load_delegate)
        return Backend(name, module.Interpreter, module.load_delegate)
    raise ModelError(
        "no TFLite interpreter is installed (" + "; ".join(failures) + "): pip install 'edgeclass[device]' (ai-edge-litert)"
    )


def backend_version(name: str) -> str | None:
    """The installed version of backend ``name`` (``"2.3.0"``), or None when its distribution is unknown."""
    from importlib import metadata

    for dist in _DISTRIBUTIONS.get(name, ()):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def has_edgetpu_op(model: Path | bytes) -> bool:
    """True when the model (a path or its bytes) was compiled for the Edge TPU.

    The op name ``edgetpu-custom-op`` is stored as a plain string in the
    flatbuffer's operator codes, so a byte search is exact enough and needs no
    flatbuffer parser.
    """
    if isinstance(model, (bytes, bytearray)):
        return EDGETPU_OP in model
    with open(model, "rb") as fh:
        return EDGETPU_OP in fh.read()


def edgetpu_runtime_error() -> str | None:
    """None when the Edge TPU runtime library loads, else why it does not.

    Probing with ctypes first avoids the interpreter's own ``load_delegate``
    noise (it prints an ignored exception from a half-built delegate object).
    """
    try:
        library = ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError as exc:
        return f"{EDGETPU_LIBRARY} not loadable ({exc})"
    # A library of that name that is not a TFLite delegate (a broken install, a
    # stray file) would make load_delegate raise AttributeError and print noise.
    if not hasattr(library, "tflite_plugin_create_delegate"):
        return f"{EDGETPU_LIBRARY} loads but is not the Edge TPU runtime (no tflite_plugin_create_delegate)"
    return None


def edgetpu_build_advice(backend: Backend) -> str:
    """Which Edge TPU runtime build this interpreter needs (libedgetpu must match its TensorFlow Lite)."""
    version = backend_version(backend.name)
    return (f"libedgetpu must be built against the TensorFlow Lite of this interpreter ({backend.name}"
            f"{' ' + version if version else ''}): Google's libedgetpu1-std 16.0 is built against TensorFlow 2.5 "
            "and crashes newer interpreters (github.com/google-coral/edgetpu/issues/812), so install a libedgetpu "
            "built against this interpreter's TensorFlow version, or run tflite-runtime 2.5 with Google's")


def make_interpreter(model_path: Path, num_threads: int | None = None, edgetpu: bool = False, backend: Backend | None = None):
    """Build and allocate an interpreter for ``model_path``.

    With ``edgetpu`` the Edge TPU delegate is attached (its absence is a
    :class:`ModelError`). A model that holds the Edge TPU custom op but is
    loaded without the delegate gets a clear error instead of the runtime's
    "unresolved custom op" failure.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: no such model file")
    backend = backend or find_backend()
    # The interpreter gets the model's bytes, not its path: it would otherwise
    # map the file, and a file replaced in place (a careless copy onto a running
    # release) would change the weights under a running model.
    content = model_path.read_bytes()
    compiled_for_tpu = has_edgetpu_op(content)
    delegates = []
    if edgetpu or compiled_for_tpu:
        problem = edgetpu_runtime_error()
        if problem is not None:
            raise ModelError(
                f"{model_path}: compiled for the Edge TPU (contains edgetpu-custom-op) but the Edge TPU runtime "
                f"is not available: {problem}; install the Edge TPU runtime and plug in the Coral device, "
                f"or use the CPU model (model.tflite); {edgetpu_build_advice(backend)}"
                if compiled_for_tpu
                else f"{model_path}: Edge TPU requested but {problem}; {edgetpu_build_advice(backend)}"
            )
        try:
            delegates.append(backend.load_delegate(EDGETPU_LIBRARY))
        except (ValueError, OSError, RuntimeError, AttributeError) as exc:
            raise ModelError(f"{model_path}: the Edge TPU delegate failed to load ({exc}); is the Coral device plugged in? "
                             f"If it is, {edgetpu_build_advice(backend)}") from None
    try:
        interpreter = backend.interpreter_class(
            model_content=content, num_threads=num_threads, experimental_delegates=delegates or None
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{model_path}: not a usable TFLite model ({first_line})") from None
    return interpreter
