"""Run `edgeclass run` the way systemd does: a real child process, a real notify socket, real signals.

:class:`Service` plays systemd: it binds the AF_UNIX datagram socket named by
NOTIFY_SOCKET, sets WATCHDOG_USEC, and records every notification; the tests
send signals and read the state file and the output.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edgeclass.device.pipeline.wrap import create_bundle_from_model

from .tinymodel import COLOURS, build_colour_classifier

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "edgeclass.service"
SHIPPED = REPO / "systemd" / "device.toml"
FRENCH = {"red": "rouge", "green": "vert", "blue": "bleu"}


class Service:
    """One ``edgeclass run`` child process and the notify socket it talks to."""

    def __init__(self, workdir: Path, args: list[str], watchdog_usec: int = 1_000_000, env: dict | None = None,
                 options: tuple[str, ...] = ()) -> None:
        # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer.
        self._sockdir = tempfile.mkdtemp(prefix="ec-", dir="/tmp")
        address = os.path.join(self._sockdir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []  # (time.time() received, line)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._receive, daemon=True).start()
        self.out, self.err = workdir / "stdout.txt", workdir / "stderr.txt"
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(watchdog_usec), "PYTHONUNBUFFERED": "1",
               **(env or {})}
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "edgeclass.device.cli", *options, "run", *map(str, args)],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=workdir)

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.time()
            with self._lock:
                self.messages += [(now, line) for line in data.decode().split("\n")]

    def lines(self, prefix: str = "") -> list[str]:
        with self._lock:
            return [line for _, line in self.messages if line.startswith(prefix)]

    def wait_for(self, predicate, timeout: float = 30, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None and not predicate():
                raise AssertionError(f"edgeclass exited ({self.proc.returncode}) waiting for {what}:\n{self.err.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; notify: {self.lines()[-20:]}\n{self.err.read_text()}")

    def wait_message(self, line: str, after: int = 0, timeout: float = 30) -> int:
        """Index (into all lines) of the first ``line`` at or after index ``after``."""
        def find():
            with self._lock:
                for i, (_, got) in enumerate(self.messages[after:], after):
                    if got == line:
                        return i + 1  # truthy
            return None
        return self.wait_for(find, timeout, what=line) - 1

    def results(self) -> list[dict]:
        rows = []
        for line in self.out.read_text().splitlines():
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # the last line may still be being written
                    pass
        return [r for r in rows if r.get("event") != "stats"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._closed.set()
        self.sock.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)


@pytest.fixture()
def service_factory(tmp_path):
    made: list[Service] = []

    def make(args, **kwargs) -> Service:
        made.append(Service(tmp_path, args, **kwargs))
        return made[-1]

    yield make
    for service in made:
        service.close()


@pytest.fixture(scope="module")
def french_bundle(tmp_path_factory) -> Path:
    """A different valid bundle: 16x16 input (not 32x32) and other label names, same colours."""
    work = tmp_path_factory.mktemp("french")
    model = work / "colour16.tflite"
    model.write_bytes(build_colour_classifier(size=16))
    labels = work / "labels.txt"
    labels.write_text("\n".join(FRENCH[c] for c in COLOURS) + "\n")
    return create_bundle_from_model(model, labels, work / "bundle")


def write_config(path: Path, **sections) -> Path:
    """A device.toml with these sections (strings, numbers and booleans, written as TOML)."""
    text = []
    for section, values in sections.items():
        text.append(f"[{section}]")
        text += [f"{key} = {json.dumps(value) if isinstance(value, (str, bool)) else value}"
                 for key, value in values.items()]
    path.write_text("\n".join(text) + "\n")
    return path


def switch(current: Path, target: Path) -> None:
    """Point ``current`` at ``target`` atomically, as `edgeclass bundle install` does."""
    tmp = current.with_name(".current.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, current)


def read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def unit_settings() -> dict[str, str]:
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, value)
    return settings


def shipped_config(tmp_path: Path, bundle: Path, source: Path) -> Path:
    """systemd/device.toml as shipped, with only the paths that point into a Pi replaced."""
    text = SHIPPED.read_text()
    for old, new in (('bundle = "/var/lib/edgeclass/current"', f'bundle = "{bundle}"'),
                     ('source = "/dev/video0"', f'source = "{source}"'),
                     ('state_file = "/run/edgeclass/state.json"', 'state_file = "state.json"'),
                     ("state_interval = 2.0", "state_interval = 0.2")):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "device.toml"
    path.write_text(text)
    return path


def stalling_fifo(tmp_path: Path, video: Path, fraction: float = 0.6):
    """A FIFO fed the first part of a real video; the writer then stops but keeps the pipe open."""
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    data = video.read_bytes()
    fds: list[int] = []

    def write():
        fd = os.open(fifo, os.O_WRONLY)  # blocks until edgeclass opens the FIFO
        fds.append(fd)
        os.write(fd, data[: int(len(data) * fraction)])

    threading.Thread(target=write, daemon=True).start()
    return fifo, fds
