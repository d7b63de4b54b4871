"""Trying the Edge TPU again after ``edgetpu = "auto"`` fell back to the CPU.

At start the Coral may not be usable yet: the USB accelerator enumerates late,
its udev rule needs a replug, libedgetpu is installed after the service
started. So in ``auto`` mode the frame loop asks :class:`EdgeTPURetry` between
frames, and every ``interval`` seconds it probes the runtime library (a
``dlopen``, microseconds). Only when the library loads does it build and test
the Edge TPU classifier, in a thread of its own (attaching the delegate and
loading the model onto the device takes a while, and a wedged USB device must
not stall the frame loop); the loop swaps it in between frames. The switch is
logged once; failed attempts only at DEBUG.
"""

from __future__ import annotations

import logging
import threading
import time

from ..bundle import Bundle
from ..errors import EdgeclassError
from .classifier import Classifier, EdgeTPU
from .interpreter import edgetpu_runtime_error
from .verify import verify_bundle

log = logging.getLogger(__name__)

RETRY_INTERVAL = 300.0  # seconds: a Coral plugged in later is in use within five minutes


class EdgeTPURetry:
    """Probes the Edge TPU every ``interval`` seconds; :meth:`poll` returns its classifier once it works."""

    def __init__(self, bundle: Bundle, cpu: Classifier, interval: float = RETRY_INTERVAL, now: float | None = None):
        self.bundle = bundle
        self.threads = cpu.num_threads
        self.interval = interval
        self.attempts = 0  # probes made (for tests and curious people)
        self._next = (time.monotonic() if now is None else now) + interval
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready: Classifier | None = None

    @classmethod
    def for_classifier(cls, bundle: Bundle, classifier: Classifier, interval: float = RETRY_INTERVAL,
                       now: float | None = None) -> "EdgeTPURetry | None":
        """A retry when ``classifier`` is the CPU fallback of an ``auto`` run, else None."""
        if not classifier.edgetpu_fallback or bundle.edgetpu_model_path is None:
            return None
        log.info("Edge TPU: trying again every %g s meanwhile", interval)
        return cls(bundle, classifier, interval, now)

    def poll(self, now: float) -> Classifier | None:
        """Between frames: start a due attempt; the tested Edge TPU classifier once one succeeded."""
        with self._lock:
            if self._thread is not None:
                if self._thread.is_alive():
                    return None
                self._thread, ready, self._ready = None, self._ready, None
                if ready is not None:
                    return ready
                self._next = now + self.interval
                return None
        if now < self._next:
            return None
        self.attempts += 1
        problem = edgetpu_runtime_error()
        if problem is not None:
            log.debug("Edge TPU still unavailable: %s", problem)
            self._next = now + self.interval
            return None
        with self._lock:
            self._thread = threading.Thread(target=self._build, name="edgeclass-edgetpu", daemon=True)
            self._thread.start()
        return None

    def _build(self) -> None:
        try:
            verified = verify_bundle(self.bundle.path, threads=self.threads, edgetpu=EdgeTPU.ON, bundle=self.bundle)
        except EdgeclassError as exc:  # the runtime loads but no device answers, or the model does not load
            log.debug("Edge TPU still unavailable: %s", exc)
            return
        except Exception as exc:  # the delegate's own errors vary; the CPU model keeps running
            log.debug("Edge TPU still unavailable: %s: %s", type(exc).__name__, exc)
            return
        with self._lock:
            self._ready = verified.classifier
