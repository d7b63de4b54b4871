"""Outputs whose work is slow: a bounded queue and a worker thread, so the frame loop never waits.

:class:`QueuedOutput` is the base for every output that touches the network
or encodes images. Its :meth:`~QueuedOutput.submit` is what the frame loop
pays: an append to a ``deque`` under a lock. When the worker falls behind
(a slow broker, a slow SD card) the oldest queued item is dropped and counted,
never the newest, and never by blocking the loop.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from ..pipeline.loop import Output

log = logging.getLogger(__name__)


class QueuedOutput(Output):
    """An output that hands items to :meth:`process` in its own thread.

    Subclasses implement :meth:`write` (cheap: filter, then :meth:`submit`)
    and :meth:`process` (the slow part). ``dropped`` counts items pushed out
    of the full queue before they were processed.
    """

    queue_size = 8

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self.dropped = 0
        self.processed = 0
        self._thread = threading.Thread(target=self._work, name=f"edgeclass-{self.name}", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        """Queue ``item`` for :meth:`process`; drops (and counts) the oldest when full."""
        with self._cond:
            if self._closing:
                return
            if len(self._items) >= self.queue_size:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def process(self, item: Any) -> None:
        """Do the slow work for one item (in the worker thread)."""
        raise NotImplementedError

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is processed; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._items and not self._busy, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Process what is queued (for up to ``timeout`` s), then stop the worker."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._closing)
                if not self._items:
                    return
                item = self._items.popleft()
                self._busy = True
            try:
                self.process(item)
                self.processed += 1
            except Exception:  # one bad item must not end the output for the rest of the run
                log.exception("%s: failed to process a result", self.name)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
