"""Keeping TensorFlow's and LiteRT's native start-up chatter off the user's terminal (``-v`` shows it).

TensorFlow's C++ logging (CPU feature notices, the oneDNN line) obeys
``TF_CPP_MIN_LOG_LEVEL`` if it is set before TensorFlow loads. Two other
lines do not: the int8 converter's ``fully_quantize: 0, inference_type: ...``
and LiteRT's ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``,
which C++ code writes straight to file descriptor 2. Around the few calls that
print them, :func:`native_output_to_debug_log` points descriptor 2 at a
temporary file (Python's own ``sys.stderr``, and so the progress bars, keep
the terminal) and passes what was written to the debug log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from typing import Iterator

log = logging.getLogger(__name__)


def verbose() -> bool:
    """True when the CLI runs with ``-v`` (the root logger shows debug messages)."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def quiet_tensorflow_logs() -> None:
    """Before TensorFlow loads: its C++ INFO lines only with ``-v`` (a value the user set is kept).

    Its Python INFO lines too: MirroredStrategy logs every reduction it sets up
    ("Reduce to /job:localhost/... then broadcast", "Collective all_reduce tensors").
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "2")
    if not verbose():
        logging.getLogger("tensorflow").setLevel(logging.WARNING)


def load_tensorflow():
    """Import TensorFlow with its start-up chatter on the debug log (``-v`` shows it); the module.

    ``TF_CPP_MIN_LOG_LEVEL`` no longer silences everything: TensorFlow 2.21's
    oneDNN notice and absl's "All log messages before absl::InitializeLog()"
    lines reach descriptor 2 during ``import tensorflow`` whatever its value,
    so the import itself runs with native output sent to the debug log.
    """
    quiet_tensorflow_logs()
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with native_output_to_debug_log("TensorFlow start-up"):
        import tensorflow
    return tensorflow


@contextlib.contextmanager
def native_output_to_debug_log(what: str) -> Iterator[None]:
    """Send what native code writes to stderr inside the block to the debug log instead."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        # Python writes (progress bars) keep going to the real stderr, through a copy of its descriptor.
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb"), encoding=getattr(python_stderr, "encoding", None)
                                      or "utf-8", errors="replace", line_buffering=True)
        try:
            yield
        finally:
            sys.stderr.flush()
            ours, sys.stderr = sys.stderr, python_stderr
            ours.close()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.debug("%s: %s", what, line)
