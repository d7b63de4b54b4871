"""Hot model reload: a new bundle proves itself before it replaces the running one.

:func:`validate_bundle` is the whole proof: hashes (``load_bundle``), the
model's tensors against the manifest (``open_classifier``), and a test
inference on a grey frame that must give one finite score per label.

:class:`Reloader` runs that work (and re-reading the config) in a background
thread, so frames keep being classified, and the watchdog keeps being fed,
while a large model loads on a slow Pi. The frame loop starts it and collects
the outcome between frames; only the loop ever swaps the model in, so the
interpreter that is classifying is never touched by two threads.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Generic, NamedTuple, TypeVar

import numpy as np

from .bundle import Bundle, load_bundle
from .classifier import Classifier, EdgeTPU, open_classifier
from .errors import EdgeclassError, ModelError
from .preprocess import Preprocessor

log = logging.getLogger(__name__)

T = TypeVar("T")
GREY = 128  # mid-grey: a real image for every normalisation, and not "blank"-sensitive here


def validate_bundle(path: str | Path, *, threads: int | None = None, edgetpu: EdgeTPU = EdgeTPU.AUTO,
                    bundle: Bundle | None = None) -> tuple[Bundle, Classifier]:
    """Load ``path`` and prove it classifies; :class:`EdgeclassError` naming the file otherwise.

    ``bundle``: an already loaded (hash-checked) bundle for ``path``, to skip reading it twice.
    """
    bundle = bundle if bundle is not None else load_bundle(path)
    classifier = open_classifier(bundle, num_threads=threads, edgetpu=edgetpu)
    spec = bundle.input
    frame = np.full((spec.height, spec.width, 3), GREY, np.uint8)
    try:
        scores = classifier.scores(Preprocessor(spec)(frame))
    except EdgeclassError:
        raise
    except Exception as exc:  # the interpreter's own error types differ per backend
        raise ModelError(f"{classifier.model_path}: test inference failed: {type(exc).__name__}: {exc}") from None
    if scores.shape != (len(bundle.labels),) or not np.all(np.isfinite(scores)):
        raise ModelError(f"{classifier.model_path}: test inference gave {scores.shape} scores "
                         f"(finite: {bool(np.all(np.isfinite(scores)))}), expected {len(bundle.labels)} finite values")
    return bundle, classifier


class Outcome(NamedTuple):
    """A finished reload: ``value`` on success, else ``error`` (one line)."""

    value: object
    error: str | None


class Reloader(Generic[T]):
    """Runs ``prepare()`` in a background thread on request; the loop collects the :class:`Outcome`.

    :meth:`request` only sets a flag, so it is safe in a signal handler.
    Requests made while a reload runs are coalesced into one more reload
    after it (the file may have changed again meanwhile).
    """

    def __init__(self, prepare: Callable[[], T]) -> None:
        self._prepare = prepare
        self._requested = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._outcome: Outcome | None = None

    def request(self) -> None:
        """Ask for a reload (signal-safe)."""
        self._requested.set()

    @property
    def busy(self) -> bool:
        """A reload is running or its outcome is waiting to be collected."""
        with self._lock:
            return self._thread is not None

    def start_if_requested(self) -> bool:
        """Start a reload when one was requested and none is running; True when started."""
        with self._lock:
            if self._thread is not None or not self._requested.is_set():
                return False
            self._requested.clear()
            self._thread = threading.Thread(target=self._work, name="edgeclass-reload", daemon=True)
            self._thread.start()
            return True

    def collect(self) -> Outcome | None:
        """The outcome of a finished reload (once), or None."""
        with self._lock:
            outcome, self._outcome = self._outcome, None
            if outcome is not None:
                self._thread = None
            return outcome

    def _work(self) -> None:
        try:
            outcome = Outcome(self._prepare(), None)
        except EdgeclassError as exc:
            outcome = Outcome(None, str(exc))
        except Exception as exc:  # anything else is still "the old model keeps running", with its type
            log.debug("reload failed", exc_info=True)
            outcome = Outcome(None, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._outcome = outcome
