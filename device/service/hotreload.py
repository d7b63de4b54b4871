"""Hot reload: the new configuration and bundle prove themselves before they replace the running ones.

:class:`Reloader` runs the preparation (re-reading the config, verifying the
bundle with a test inference, building the outputs whose settings changed:
:mod:`.reconfigure`) in a background thread, so frames keep being classified,
and the watchdog keeps being fed, while a large model loads on a slow Pi. The
frame loop starts it and collects the outcome between frames; only the loop
ever swaps anything in, so the interpreter that is classifying is never
touched by two threads.

A preparation that hangs (a config file on a dead network share, a driver
that never returns) is given up after ``timeout`` seconds: the outcome is a
failure that says where it was stuck, the old model keeps running, and the
abandoned thread's result, should it ever finish, is thrown away (its
resources handed to ``discard``). A thread cannot be killed, so while one is
still stuck a new request is refused with that reason rather than stacking
up stuck threads; a restart clears it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
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
    after it (the file may have changed again meanwhile). ``timeout``: seconds
    after which :meth:`collect` gives up on a preparation (None = never).
    """

    def __init__(self, prepare: Callable[[], T], *, timeout: float | None = None,
                 discard: Callable[[T], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._prepare = prepare
        self.timeout = timeout
        self._discard = discard
        self._clock = clock
        self._requested = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._generation = 0
        self._outcome: Outcome | None = None
        self._stuck: tuple[threading.Thread, float] | None = None  # a timed-out thread still running

    def request(self) -> None:
        """Ask for a reload (signal-safe)."""
        self._requested.set()

    @property
    def busy(self) -> bool:
        """A reload is running or its outcome is waiting to be collected."""
        with self._lock:
            return self._thread is not None or self._outcome is not None

    def start_if_requested(self) -> bool:
        """Start a reload when one was requested and none is running; True when one began.

        While an earlier, timed-out reload is still stuck, the request is
        answered at once with a failure (collected like any other outcome).
        """
        with self._lock:
            if self._thread is not None or self._outcome is not None or not self._requested.is_set():
                return False
            self._requested.clear()
            if self._stuck is not None and self._stuck[0].is_alive():
                since = self._clock() - self._stuck[1]
                self._outcome = Outcome(None, f"the reload started {since:.0f} s ago is still stuck "
                                              f"({_where(self._stuck[0])}); not starting another: restart the service")
                return True
            self._stuck = None
            self._generation += 1
            self._started = self._clock()
            self._thread = threading.Thread(target=self._work, args=(self._generation, self._started), name="edgeclass-reload",
                                            daemon=True)
            self._thread.start()
            return True

    def collect(self) -> Outcome | None:
        """The outcome of a finished (or timed-out) reload, once; None while it runs or when none ran."""
        with self._lock:
            if self._outcome is not None:
                outcome, self._outcome = self._outcome, None
                self._thread = None
                return outcome
            thread = self._thread
            if thread is None or self.timeout is None or self._clock() - self._started < self.timeout:
                return None
            # Given up: the thread runs on, but its result no longer belongs to anyone.
            self._generation += 1
            self._thread = None
            self._stuck = (thread, self._started)
            return Outcome(None, f"timed out after {self.timeout:g} s ({_where(thread)})")

    def _work(self, generation: int, started: float) -> None:
        try:
            outcome = Outcome(self._prepare(), None)
        except EdgeclassError as exc:
            outcome = Outcome(None, str(exc))
        except Exception as exc:  # anything else is still "the old model keeps running", with its type
            log.debug("reload failed", exc_info=True)
            outcome = Outcome(None, f"{type(exc).__name__}: {exc}")
        with self._lock:
            current = generation == self._generation and self._thread is threading.current_thread()
            if current:
                self._outcome = outcome
                return
        late = self._clock() - started
        log.warning("a reload that had timed out finished %.0f s after it started (%s); its result is "
                    "discarded: send another reload to apply the configuration",
                    late, "failed" if outcome.error else "it worked")
        if outcome.error is None and self._discard is not None:
            self._discard(outcome.value)


def _where(thread: threading.Thread) -> str:
    """Where a thread is now: 'stuck in read_bytes (pathlib.py:1050)', for the log."""
    frame = sys._current_frames().get(thread.ident) if thread.ident is not None else None
    if frame is None:
        return "finishing"
    return f"stuck in {frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})"
