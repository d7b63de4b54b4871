"""Hot model reload: a new bundle proves itself before it replaces the running one.

:class:`Reloader` runs the proof (re-reading the config, then
:func:`edgeclass.device.pipeline.verify.verify_bundle`) in a background
thread, so frames keep being classified, and the watchdog keeps being fed,
while a large model loads on a slow Pi. The frame loop starts it and collects
the outcome between frames; only the loop ever swaps the model in, so the
interpreter that is classifying is never touched by two threads.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Generic, NamedTuple, TypeVar

from ..errors import EdgeclassError

log = logging.getLogger(__name__)

T = TypeVar("T")


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
