"""Where the command's log lines go, and how they look there.

Only the CLI configures logging; library modules just call
``logging.getLogger(__name__)``. Lines go to stderr, one per record. Under
systemd, when stderr *is* the journal's stream, each line starts with the
syslog priority in angle brackets (``<3>`` error, ``<4>`` warning, ``<6>``
info, ``<7>`` debug; sd-daemon(3)): journald strips the prefix and files the
line at that priority, so ``journalctl -u edgeclass -p warning`` shows the
warnings and errors and nothing else. Elsewhere (a terminal, a pipe, a file)
the lines stay plain.

"Is the journal" is decided the way systemd.exec(5) says: ``$JOURNAL_STREAM``
holds the device and inode of the stream systemd connected, and they must
match stderr's own. A variable that is merely inherited (a shell started from
a unit, a child whose stderr was redirected) does not count.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Mapping

from ..errors import printable

# syslog(3) priorities, as journald reads them from a "<N>" line prefix.
PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
ERROR = 3
WARNING = 4


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (custom levels round down to the nearest known one)."""
    for level in sorted(PRIORITY, reverse=True):
        if levelno >= level:
            return PRIORITY[level]
    return PRIORITY[logging.DEBUG]


def connected_to_journal(stream: IO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` (default stderr) is the journal stream systemd gave this process."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no real file descriptor (a test's StringIO, closed)
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def prefixed(text: str, syslog_priority: int, journal: bool) -> str:
    """``text`` with ``<N>`` before every line when writing to the journal; unchanged otherwise.

    Every line: journald files each line of a stream as its own entry, so a
    traceback's later lines would otherwise land at the default priority.
    """
    if not journal:
        return text
    return "\n".join(f"<{syslog_priority}>{line}" for line in text.split("\n"))


class PrintableFormatter(logging.Formatter):
    """Log lines without terminal control codes: messages quote a bundle's name and labels."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # a traceback, appended after, keeps its newlines
        return printable(super().formatMessage(record))


class JournalFormatter(PrintableFormatter):
    """The plain one-line format, with the record's syslog priority in front of each line."""

    def format(self, record: logging.LogRecord) -> str:
        return prefixed(super().format(record), priority(record.levelno), journal=True)


FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Plain one-line logs on stderr (journald adds its own timestamps); priority prefixes under the journal."""
    root = logging.getLogger()
    if not any(getattr(h, "_edgeclass", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter(FORMAT) if connected_to_journal() else PrintableFormatter(FORMAT))
        handler._edgeclass = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def error_line(text: str, syslog_priority: int = ERROR) -> str:
    """A line the CLI prints itself on stderr ("error: ..."), prefixed like a log record under the journal."""
    # Errors quote file contents (labels, config values): no control codes reach the terminal.
    return prefixed(printable(text), syslog_priority, connected_to_journal())
