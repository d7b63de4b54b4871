"""Telling systemd the truth about the service: sd_notify, stdlib only.

systemd passes a datagram socket in ``$NOTIFY_SOCKET`` to ``Type=notify``
services; each message is a datagram of ``KEY=VALUE`` lines (``READY=1``,
``STATUS=...``, ``WATCHDOG=1``, ...). Outside systemd the variable is unset and
every call here is a cheap no-op returning False, so the run loop calls these
unconditionally.

The variable is read on every call and never removed from the environment:
the service keeps notifying after a SIGHUP reload, and it starts no children
that could be confused by it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Mapping

from ..errors import printable

log = logging.getLogger(__name__)

_warned: set[str] = set()


def _address(value: str) -> str | None:
    """The socket address for a NOTIFY_SOCKET value, or None when it is unusable."""
    if value.startswith("@"):
        # Linux abstract namespace: the name starts with a NUL byte, not "@".
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def notify(*lines: str) -> bool:
    """Send ``lines`` (e.g. ``"READY=1"``, ``"STATUS=ok"``) as one datagram to systemd.

    Returns True when the datagram was sent, False when ``$NOTIFY_SOCKET`` is
    unset (not running under systemd) or the send failed. A failure is logged
    once per socket, not per frame: the watchdog pings several times a minute.
    """
    value = os.environ.get("NOTIFY_SOCKET")
    if not value or not lines:
        return False
    address = _address(value)
    if address is None:
        _warn_once(value, f"NOTIFY_SOCKET={value!r} is neither an absolute path nor @abstract; not notifying systemd")
        return False
    message = "\n".join(lines).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        _warn_once(value, f"cannot notify systemd through {value}: {exc}")
        return False
    return True


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def ready(status: str | None = None) -> bool:
    """Startup (or a reload) is complete: systemd marks the unit active."""
    return notify("READY=1", *([_status_line(status)] if status else []))


def status(text: str) -> bool:
    """A one-line human status shown by ``systemctl status`` (fps, current label)."""
    return notify(_status_line(text))


def stopping() -> bool:
    """Shutdown has begun (sent on SIGTERM before the clean exit)."""
    return notify("STOPPING=1")


def reloading() -> bool:
    """A reload has begun; call :func:`ready` when it is done.

    systemd 253+ (``Type=notify-reload``) wants ``MONOTONIC_USEC`` with it, on
    CLOCK_MONOTONIC, so it can tell this reload from an earlier one; older
    versions ignore the extra line.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def watchdog_ping() -> bool:
    """Keep-alive: the run loop sends it only while frames are being classified."""
    return notify("WATCHDOG=1")


def _status_line(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment inside the datagram, and
    # `systemctl status` prints the text (a label from a bundle) to a terminal.
    return "STATUS=" + printable(" ".join(str(text).split()))


@dataclass(frozen=True)
class Watchdog:
    """The watchdog systemd set up for this process (``WatchdogSec=`` in the unit).

    systemd exports ``WATCHDOG_USEC`` (the interval) and ``WATCHDOG_PID`` (the
    process that must ping). We ping every half interval, as sd_watchdog_enabled(3)
    recommends, so one late frame does not get the service killed.
    """

    interval_usec: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, pid: int | None = None) -> "Watchdog":
        """Read the watchdog settings; disabled when unset, malformed, or meant for another process."""
        env = os.environ if environ is None else environ
        raw = env.get("WATCHDOG_USEC")
        if not raw:
            return cls(None)
        try:
            usec = int(raw)
        except ValueError:
            log.warning("WATCHDOG_USEC=%r is not an integer; watchdog pings disabled", raw)
            return cls(None)
        owner = env.get("WATCHDOG_PID")
        if owner:
            try:
                if int(owner) != (os.getpid() if pid is None else pid):
                    return cls(None)
            except ValueError:
                log.warning("WATCHDOG_PID=%r is not an integer; watchdog pings disabled", owner)
                return cls(None)
        return cls(usec if usec > 0 else None)

    @property
    def enabled(self) -> bool:
        """Whether systemd expects pings from this process."""
        return self.interval_usec is not None

    @property
    def interval(self) -> float | None:
        """Seconds after the last ping at which systemd kills the service."""
        return None if self.interval_usec is None else self.interval_usec / 1_000_000

    @property
    def ping_every(self) -> float | None:
        """Seconds between pings: half the interval."""
        return None if self.interval_usec is None else self.interval_usec / 2_000_000

    def due(self, last_ping: float | None, now: float) -> bool:
        """Whether a ping is due, given the monotonic time of the last one (None: never pinged)."""
        if self.interval_usec is None:
            return False
        return last_ping is None or now - last_ping >= self.ping_every

    def ping(self) -> bool:
        """Send ``WATCHDOG=1`` if enabled; returns whether it was sent."""
        return watchdog_ping() if self.enabled else False
