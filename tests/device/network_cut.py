"""Test fault injection: the Pi's network goes away. Kill one sshd's connections (its children) and the listener, by pid.

Usage: network_cut.py LISTENER_PID
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


if __name__ == "__main__":
    listener = int(sys.argv[1])
    victims = children(listener)
    os.kill(listener, signal.SIGKILL)  # first, so no new connection is accepted
    for pid in victims:  # this command's own session is one of them
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
