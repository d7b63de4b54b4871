"""Log lines under systemd carry journald's priority prefix; elsewhere they stay plain.

journald hands a service a stream socket as stdout/stderr and says so in
$JOURNAL_STREAM ("device:inode" of that socket). The tests do the same with
a real AF_UNIX stream socket pair: the child's stderr is one end, the test
reads the other, exactly the bytes journald would parse.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

from .service_process import stalling_fifo


def _run_into_socket(args, cwd, *, journal: bool | str, timeout: float = 60) -> tuple[int, list[str]]:
    """``edgeclass ARGS`` with stderr on a socket, as systemd connects it to journald; returns (exit code, lines).

    ``journal``: True sets JOURNAL_STREAM to that socket's device:inode, a string sets it as given
    (an inherited, stale value), False leaves it unset.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    if journal is True:
        st = os.fstat(theirs.fileno())
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    elif journal:
        env["JOURNAL_STREAM"] = journal
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: [chunks.append(b) for b in iter(lambda: ours.recv(65536), b"")],
                              daemon=True)
    reader.start()
    proc = subprocess.Popen([sys.executable, "-m", "edgeclass.device.cli", *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=theirs.fileno(), env=env, cwd=cwd)
    theirs.close()
    try:
        code = proc.wait(timeout)
    finally:
        proc.kill()
    reader.join(10)
    ours.close()
    return code, b"".join(chunks).decode().splitlines()


def _stalling_run(tmp_path, colour_video, colour_bundle, journal):
    fifo, fds = stalling_fifo(tmp_path, colour_video)
    try:
        return _run_into_socket(["-v", "run", "-b", colour_bundle, "-s", fifo, "-f", "jsonl", "--loop",
                                 "--stall-timeout", "0.5", "--give-up-after", "2"], tmp_path, journal=journal)
    finally:
        for fd in fds:
            os.close(fd)


def test_journal_lines_carry_priority_prefixes_so_p_warning_filters(tmp_path, colour_video, colour_bundle):
    """Fault: every line reached the journal at priority 6, `error:` and WARNING lines included.

    A camera that stalls then gives up produces debug, info, warning and the
    final error line; each starts with its syslog priority, so
    `journalctl -p warning` would show exactly the warnings and the error.
    """
    code, lines = _stalling_run(tmp_path, colour_video, colour_bundle, journal=True)
    assert code == 2
    ours = [line for line in lines if "edgeclass" in line or line.startswith("<3>error: ")]
    assert ours and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in ours), ours
    by_priority = {p: [line[3:] for line in ours if line.startswith(p)] for p in ("<3>", "<4>", "<6>", "<7>")}
    assert any(line.startswith("WARNING edgeclass.device.pipeline.capture: ") and "reopening in" in line
               for line in by_priority["<4>"])
    assert any(line.startswith("INFO edgeclass.device.pipeline.capture: opened ") for line in by_priority["<6>"])
    assert all(line.startswith("DEBUG ") for line in by_priority["<7>"])
    assert lines[-1].startswith("<3>error: ") and "giving up" in lines[-1]  # the CLI's own line, too
    # `journalctl -p warning`: priority 4 or more urgent, and nothing from the INFO/DEBUG lines leaks in.
    shown = [line for line in ours if line[1] in "01234"]
    assert shown and not any(line[3:].startswith(("INFO ", "DEBUG ")) for line in shown)


def test_outside_the_journal_lines_stay_plain(tmp_path, colour_video, colour_bundle):
    """A terminal, or a JOURNAL_STREAM inherited by a process whose stderr goes elsewhere: no prefixes."""
    for name, journal in (("terminal", False), ("inherited", "1:1")):
        (tmp_path / name).mkdir()
        code, lines = _stalling_run(tmp_path / name, colour_video, colour_bundle, journal=journal)
        assert code == 2
        assert not any(line.startswith("<") for line in lines), lines
        assert lines[-1].startswith("error: ") and any(line.startswith("WARNING ") for line in lines)


def test_the_error_line_of_any_command_is_prefixed_under_the_journal(tmp_path):
    """Not only `run`: a user error from any command is an error-priority entry."""
    code, lines = _run_into_socket(["bundle", "info", tmp_path / "no-such-bundle"], tmp_path, journal=True)
    assert code == 2 and lines[-1].startswith("<3>error: ") and "no-such-bundle" in lines[-1]


def test_priorities_and_multi_line_records():
    """sd-daemon(3)'s numbers for each level; every line of a traceback carries the prefix."""
    import logging

    from edgeclass.device.cli.logs import JournalFormatter, priority, prefixed

    assert [priority(level) for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
                                          logging.CRITICAL)] == [7, 6, 4, 3, 2]
    assert priority(25) == 6 and priority(5) == 7  # custom levels round down
    assert prefixed("one\ntwo", 3, journal=True) == "<3>one\n<3>two" and prefixed("x", 3, journal=False) == "x"
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("edgeclass.x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    text = JournalFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert text.splitlines()[0] == "<3>ERROR edgeclass.x: failed" and len(text.splitlines()) > 2
    assert all(line.startswith("<3>") for line in text.splitlines())
