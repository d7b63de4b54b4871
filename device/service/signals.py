"""The run command's signals: when they stop the run, when SIGHUP reloads it.

- SIGTERM (``systemctl stop``) and SIGINT (Ctrl-C) stop the run cleanly, at
  any moment: while the bundle loads, while a camera or a first bundle is
  awaited, or between frames. The command then exits 0.
- SIGHUP reloads the configuration and the bundle only where a reload means
  something: under the service (``$NOTIFY_SOCKET`` set, ``ExecReload=kill -HUP``)
  or with ``--config``. In an interactive run it is what it always meant, the
  terminal hung up, so it stops the run like SIGTERM (unless it was ignored
  when the process started, as ``nohup`` does).

While the run is starting (loading and verifying a model can take seconds on
a Pi), a stop signal raises :class:`Stopped` in the main thread through
:meth:`RunSignals.interruptible`, so nothing waits for the load to finish.
Afterwards the handlers only take note (set an event, call the registered
callbacks): the frame loop stops between frames, and reloads are done by the
loop, never inside a handler.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Callable, Iterator

log = logging.getLogger(__name__)


class Stopped(BaseException):
    """A stop signal arrived while the run was starting up.

    A ``BaseException`` (like ``KeyboardInterrupt``): code that turns
    ``Exception`` into a user error (a failed test inference) must not
    swallow it.
    """


class RunSignals:
    """Installs the handlers for one run; :meth:`restore` puts the previous ones back."""

    def __init__(self, *, reload: bool) -> None:
        self.reload_enabled = reload
        self.stopped_by: str | None = None  # the signal's name, once one asked to stop
        self.reload_requested = threading.Event()
        self.wakeup = threading.Event()  # set by every signal: a waiting loop looks again at once
        self._on_stop: list[Callable[[], None]] = []
        self._on_reload: Callable[[], None] | None = None
        self._interruptible = False
        self._previous: dict[int, object] = {}

    # -- set up --------------------------------------------------------------------

    def install(self) -> "RunSignals":
        """Take over SIGTERM, SIGINT and SIGHUP (call from the main thread)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._stop)
        hup = signal.getsignal(signal.SIGHUP)
        if self.reload_enabled:
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._reload)
        elif hup is not signal.SIG_IGN:  # nohup: the user asked to outlive the terminal
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._stop)
        return self

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the handler) when a stop signal arrives; at once if one already did."""
        self._on_stop.append(callback)
        if self.stopped_by is not None:
            callback()

    def on_reload(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the handler) on SIGHUP; at once if a SIGHUP arrived before it was set.

        ``callback`` must only take note (set a flag); the loop does the work.
        """
        self._on_reload = callback
        if self.reload_requested.is_set():
            callback()

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Inside this block a stop signal raises :class:`Stopped` at once (start-up work)."""
        if self.stopped_by is not None:
            raise Stopped(self.stopped_by)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    @property
    def stopping(self) -> bool:
        return self.stopped_by is not None

    # -- the handlers ---------------------------------------------------------------

    def _stop(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        first = self.stopped_by is None
        if first:
            self.stopped_by = name
            why = "the terminal hung up" if signum == signal.SIGHUP else f"received {name}"
            log.info("%s, stopping", why)
            for callback in self._on_stop:
                callback()
        self.wakeup.set()
        if self._interruptible:
            self._interruptible = False  # raise once; cleanup code may run after it
            raise Stopped(name)

    def _reload(self, signum, _frame) -> None:
        log.info("received SIGHUP, reloading")
        self.reload_requested.set()
        self.wakeup.set()
        if self._on_reload is not None:
            self._on_reload()
