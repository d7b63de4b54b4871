"""A real mosquitto broker on 127.0.0.1, a throwaway TLS CA, and a paho subscriber for the MQTT tests.

The broker is Debian's ``mosquitto`` (``.ci/run`` installs it), started on a
free port with a config written here; the CA and certificates are made with
the ``openssl`` command line for each test session and never leave its
temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.access(p, os.X_OK)), None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
OPENSSL = shutil.which("openssl")


def need_mosquitto() -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian: apt install mosquitto; .ci/run installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tls(NamedTuple):
    """PEM files of a throwaway CA and the certificates it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a second CA that signed nothing here: trusting it must fail


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"


def _make_ca(work: Path, name: str) -> tuple[Path, Path]:
    crt, key = work / f"{name}.crt", work / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key.name, "-out", crt.name, "-days", "2", "-subj", f"/CN=edgeclass test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=work)
    return crt, key


def _make_leaf(work: Path, ca: tuple[Path, Path], name: str, usage: str) -> tuple[Path, Path]:
    crt, key, csr, ext = (work / f"{name}.{s}" for s in ("crt", "key", "csr", "ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   f"keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
                   "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key.name, "-out", csr.name, "-subj", f"/CN={name}", cwd=work)
    _openssl("x509", "-req", "-in", csr.name, "-CA", ca[0].name, "-CAkey", ca[1].name, "-CAcreateserial",
             "-days", "2", "-extfile", ext.name, "-out", crt.name, cwd=work)
    return crt, key


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> Tls:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and an unrelated CA."""
    if OPENSSL is None:
        pytest.skip("openssl is not installed: the TLS tests make their throwaway CA with it (apt install openssl)")
    work = tmp_path_factory.mktemp("tls")
    ca = _make_ca(work, "ca")
    server = _make_leaf(work, ca, "server", "serverAuth")
    client = _make_leaf(work, ca, "client", "clientAuth")
    other = _make_ca(work, "other-ca")
    return Tls(ca[0], *server, *client, other[0])


class Mosquitto:
    """One mosquitto process on 127.0.0.1; :meth:`restart` brings it back on the same port, empty."""

    def __init__(self, workdir: Path, *, tls: Tls | None = None, require_certificate: bool = False,
                 users: dict[str, str] | None = None) -> None:
        need_mosquitto()
        self.workdir = workdir
        self.port = free_port()
        self.tls = tls
        self.log = workdir / f"mosquitto-{self.port}.log"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"log_dest file {self.log}",
                 "log_type all", "connection_messages true",
                 "user root"]  # as root mosquitto would switch to its own user, who cannot read the test's files
        if users:
            if MOSQUITTO_PASSWD is None:
                pytest.skip("mosquitto_passwd is not installed (it comes with Debian's mosquitto package)")
            passwd = workdir / "mosquitto.passwd"
            for i, (user, password) in enumerate(users.items()):
                subprocess.run([MOSQUITTO_PASSWD, "-b", *(["-c"] if i == 0 else []), str(passwd), user, password],
                               check=True, capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}"]
            if require_certificate:
                lines.append("require_certificate true")
        self.config = workdir / f"mosquitto-{self.port}.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.proc.stderr.read().decode()} {self.log_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        """The broker goes away (SIGTERM): its connections close, its retained messages are gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """The broker hangs (SIGSTOP): connections stay open, nothing is read or answered."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture()
def broker(tmp_path):
    """A plain (anonymous, no TLS) mosquitto on a free port, stopped after the test."""
    b = Mosquitto(tmp_path)
    yield b
    b.stop()


class Message(NamedTuple):
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.time() when received

    def json(self):
        return json.loads(self.payload)

    @property
    def text(self) -> str:
        return self.payload.decode()


class Subscriber:
    """A paho client subscribed to ``topics`` that records every message (with its retain flag)."""

    def __init__(self, port: int, topics=("#",), *, ca: Path | None = None, cert: Path | None = None,
                 key: Path | None = None, username: str | None = None, password: str | None = None) -> None:
        import paho.mqtt.client as paho

        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{free_port()}")
        if ca is not None:
            context = ssl.create_default_context(cafile=str(ca))
            if cert is not None:
                context.load_cert_chain(str(cert), str(key))
            self.client.tls_set_context(context)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the test subscriber could not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def topics(self) -> set[str]:
        with self._lock:
            return {m.topic for m in self.messages}

    def wait_for(self, predicate: Callable[["Subscriber"], object], timeout: float = 20, what: str = "messages"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate(self)
            if value:
                return value
            time.sleep(0.05)
        with self._lock:
            seen = [(m.topic, m.payload[:80]) for m in self.messages[-10:]]
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last messages: {seen}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
