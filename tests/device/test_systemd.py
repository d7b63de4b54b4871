"""sd_notify against a real AF_UNIX datagram socket bound by the test (what systemd does)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from edgeclass.device.service import systemd


def _bind(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind(address)
    sock.settimeout(5)
    return sock


@pytest.fixture()
def notify_socket(tmp_path, monkeypatch):
    """A filesystem notify socket, as systemd's /run/systemd/notify."""
    path = tmp_path / "notify"
    sock = _bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture()
def abstract_socket(tmp_path, monkeypatch):
    """An abstract-namespace notify socket (NOTIFY_SOCKET starting with '@')."""
    name = f"edgeclass-test-{os.getpid()}-{tmp_path.name}"
    sock = _bind("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def _lines(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_no_socket_is_a_noop(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    assert systemd.ready() is False
    assert systemd.watchdog_ping() is False


def test_relative_or_dead_socket_returns_false(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/notify")
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.notify("READY=1") is False


def test_messages_arrive(notify_socket):
    assert systemd.ready() is True
    assert _lines(notify_socket) == ["READY=1"]
    assert systemd.status("12.5 fps, label daisy\nREADY=1")
    assert _lines(notify_socket) == ["STATUS=12.5 fps, label daisy READY=1"]  # no smuggled second line
    assert systemd.ready("running")
    assert _lines(notify_socket) == ["READY=1", "STATUS=running"]
    assert systemd.watchdog_ping()
    assert _lines(notify_socket) == ["WATCHDOG=1"]
    assert systemd.stopping()
    assert _lines(notify_socket) == ["STOPPING=1"]


def test_reloading_carries_monotonic_usec(notify_socket):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.reloading()
    lines = _lines(notify_socket)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_abstract_namespace(abstract_socket):
    assert systemd.ready()
    assert _lines(abstract_socket) == ["READY=1"]


def test_child_process_notifies_in_order(notify_socket):
    """A separate process (as the service is) reaches the socket through the inherited variable."""
    code = ("from edgeclass.device.service import systemd as s; "
            "assert s.ready() and s.watchdog_ping() and s.stopping()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    assert [_lines(notify_socket)[0] for _ in range(3)] == ["READY=1", "WATCHDOG=1", "STOPPING=1"]


def test_watchdog_from_env():
    pid = os.getpid()
    assert not systemd.Watchdog.from_env({}).enabled
    wd = systemd.Watchdog.from_env({"WATCHDOG_USEC": "30000000"})
    assert wd.enabled and wd.interval == 30.0 and wd.ping_every == 15.0
    assert systemd.Watchdog.from_env({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(pid)}).ping_every == 2.0
    # Meant for another process (e.g. we were started by the service's main process).
    assert not systemd.Watchdog.from_env({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(pid + 1)}).enabled
    assert not systemd.Watchdog.from_env({"WATCHDOG_USEC": "soon"}).enabled
    assert not systemd.Watchdog.from_env({"WATCHDOG_USEC": "0"}).enabled


def test_watchdog_due_and_ping(notify_socket):
    wd = systemd.Watchdog.from_env({"WATCHDOG_USEC": "2000000"})
    assert wd.due(None, 100.0)
    assert not wd.due(100.0, 100.9)
    assert wd.due(100.0, 101.0)
    assert wd.ping()
    assert _lines(notify_socket) == ["WATCHDOG=1"]
    disabled = systemd.Watchdog.from_env({})
    assert not disabled.due(None, 0.0) and disabled.ping() is False
