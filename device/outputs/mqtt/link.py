"""One connection to an MQTT broker, owned by one thread, that the frame loop never waits for.

:class:`BrokerLink` runs paho-mqtt's client in its own thread with paho's
external-loop calls (``loop_read``/``loop_write``/``loop_misc`` around our
own ``select``), so every paho call happens in that thread and the thread
can be woken at once when there is something to send. It offers two kinds of
message:

- **retained** (:meth:`retain`): one slot per topic, the latest value wins.
  Every slot is published again on each (re)connection, so a broker that was
  down, or restarted and lost its retained messages, always ends up with the
  current state, availability and discovery configs;
- **streamed** (:meth:`send`): a bounded queue; when it is full the oldest
  message is dropped and counted.

The connection: a Last Will of ``offline`` on the availability topic;
reconnects with an exponential backoff (0.5 s doubling to 30 s, reset after a
successful connection); at most :data:`MAX_IN_FLIGHT` messages handed to paho
and not yet written (QoS 0) or acknowledged (QoS 1, 2), so a slow broker
fills our bounded queue, not an unbounded one inside paho. Connection
problems are logged once each (the same error again is a debug line), with
what to check; the password is never part of any message.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any

import paho.mqtt.client as paho

from .config import Broker

log = logging.getLogger(__name__)

KEEPALIVE = 30  # seconds: a Pi that loses power is "offline" (Last Will) within about 45 s
BACKOFF = (0.5, 30.0)  # seconds: first wait after a failure, and the longest
MAX_IN_FLIGHT = 10
QUEUE_SIZE = 16
CONNECT_TIMEOUT = 5.0  # seconds for the TCP connection and the TLS handshake


class BrokerLink:
    """Publishes retained slots and a bounded stream to one broker from a thread of its own."""

    def __init__(self, broker: Broker, *, will: tuple[str, str], client_id: str, qos: int = 1,
                 username: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None, queue_size: int = QUEUE_SIZE) -> None:
        self.broker = broker
        self.qos = qos
        self.client_id = client_id
        self.queue_size = queue_size
        self.published = 0
        self.dropped = 0
        self.connections = 0
        self._will_topic, self._will_payload = will
        self._lock = threading.Lock()
        self._slots: dict[str, Any] = {}  # topic -> payload, in first-set order
        self._dirty: dict[str, None] = {}  # topics whose slot is not yet published on this connection
        self._queue: deque[tuple[str, Any]] = deque()
        self._in_flight: deque[paho.MQTTMessageInfo] = deque()
        self._connected = False
        self._stalled = False  # MAX_IN_FLIGHT reached: the broker's acknowledgements wake the thread, not us
        self._closing = False
        self._last_problem: str | None = None
        self._failures = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=paho.MQTTv311, clean_session=True)
        self._client.connect_timeout = CONNECT_TIMEOUT
        self._client.will_set(self._will_topic, self._will_payload, qos=qos, retain=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._run, name="edgeclass-mqtt", daemon=True)

    # -- called from other threads (the frame loop, the service) ------------------

    def start(self) -> None:
        """Start connecting (in the link's thread); returns at once."""
        self._thread.start()

    def retain(self, topic: str, payload: Any) -> None:
        """Make ``payload`` the retained message of ``topic``: text, a dict (sent as JSON), or a callable making one."""
        with self._lock:
            self._slots[topic] = payload
            self._dirty[topic] = None
            self._wake_if_useful()

    def send(self, topic: str, payload: Any) -> None:
        """Queue a non-retained message; the oldest queued one is dropped (and counted) when the queue is full."""
        with self._lock:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((topic, payload))
            self._wake_if_useful()

    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> dict:
        """``connected``, ``published``, ``dropped`` (streamed messages pushed out of the queue), ``queued``, ``connections``."""
        with self._lock:
            queued = len(self._queue)
        return {"connected": self._connected, "published": self.published, "dropped": self.dropped,
                "queued": queued, "connections": self.connections}

    def close(self, timeout: float = 2.0) -> None:
        """Publish what is pending and ``offline``, disconnect cleanly, stop the thread (waits up to ``timeout`` s)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._slots[self._will_topic] = self._will_payload
            self._dirty[self._will_topic] = None
            self._wake()
        if not self._thread.is_alive() and self._thread.ident is None:  # never started
            self._close_pipe()
            return
        self._thread.join(timeout)
        if self._thread.is_alive():  # it closes the pipe itself when it ends
            if self._connected:
                log.warning("mqtt: %s did not take the goodbye within %g s; its Last Will will say offline",
                            self.broker.url, timeout)
            else:  # still inside a connection attempt
                log.debug("mqtt: left the connection attempt to %s behind", self.broker.url)

    def _wake_if_useful(self) -> None:
        # Disconnected, the thread has nothing to send (a connection publishes every slot);
        # stalled, an acknowledgement wakes it. A stale answer costs one spare wake-up at most.
        if self._connected and not self._stalled:
            self._wake()

    def _wake(self) -> None:
        """Wake the link's thread (called with the lock held, so the pipe cannot be closed meanwhile)."""
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:  # the pipe is full: the thread wakes anyway
                pass

    def _close_pipe(self) -> None:
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            self._wake_r = self._wake_w = -1

    # -- the link's thread --------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            if self._open():
                self._serve()
            if not self._closing:
                self._wait(self._backoff())
        if self._client.socket() is not None:  # closed while connecting
            self._client.disconnect()
        self._close_pipe()

    def _open(self) -> bool:
        try:
            self._client.connect(self.broker.host, self.broker.port, keepalive=KEEPALIVE)
        except (OSError, ValueError) as exc:  # refused, unreachable, unknown host, TLS handshake, certificate
            self._problem(f"cannot connect to {self.broker.url}: {describe(exc)}")
            return False
        return True

    def _serve(self) -> None:
        """Run the connection until it is lost or the goodbye has been written."""
        client = self._client
        said_goodbye = False
        while True:
            sock = client.socket()
            if sock is None:
                return
            if self._closing and not said_goodbye:
                if not self._connected:  # still waiting for CONNACK: nothing was announced
                    client.disconnect()
                    return
                self._drain(limit=None)
                client.disconnect()  # queued after the last PUBLISH, so the broker handles those first
                said_goodbye = True
                continue
            pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
            try:
                readable, writable, _ = select.select([sock, self._wake_r], [sock] if client.want_write() else [],
                                                      [], 0.0 if pending else 1.0)
            except (OSError, ValueError):
                readable, writable = [], []
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            rc = paho.MQTT_ERR_SUCCESS
            if sock in readable or pending:
                rc = client.loop_read()
            if rc == paho.MQTT_ERR_SUCCESS and sock in writable and client.socket() is not None:
                rc = client.loop_write()
            if rc == paho.MQTT_ERR_SUCCESS and client.socket() is not None:
                rc = client.loop_misc()
            if rc != paho.MQTT_ERR_SUCCESS or client.socket() is None:
                return
            if self._connected and not said_goodbye:
                self._drain(limit=MAX_IN_FLIGHT)

    def _drain(self, limit: int | None) -> None:
        """Hand paho what is pending: dirty retained slots first, then the queue, ``limit`` in flight at most."""
        self._in_flight = deque(info for info in self._in_flight if not info.is_published())
        while True:
            self._stalled = limit is not None and len(self._in_flight) >= limit
            if self._stalled:
                return
            with self._lock:
                if self._dirty:
                    topic = next(iter(self._dirty))
                    del self._dirty[topic]
                    payload, retain = self._slots[topic], True
                elif self._queue:
                    (topic, payload), retain = self._queue.popleft(), False
                else:
                    return
            try:
                data = encode(payload)
            except Exception:  # a bug in one message must not end the connection's thread
                log.exception("mqtt: cannot encode the message for %s; skipped", topic)
                continue
            info = self._client.publish(topic, data, qos=self.qos, retain=retain)
            if info.rc != paho.MQTT_ERR_SUCCESS:  # the connection just went; on_connect marks every slot again
                with self._lock:
                    self.dropped += not retain
                return
            if not info.is_published():
                self._in_flight.append(info)

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or until :meth:`close` is called."""
        deadline = time.monotonic() + seconds
        while not self._closing:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([self._wake_r], [], [], left)
            if readable:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass

    def _backoff(self) -> float:
        low, high = BACKOFF
        self._failures += 1
        return min(high, low * 2 ** (self._failures - 1))

    def _problem(self, message: str) -> None:
        if message != self._last_problem:
            self._last_problem = message
            log.warning("mqtt: %s; retrying with backoff (up to %g s between attempts)", message, BACKOFF[1])
        else:
            log.debug("mqtt: %s", message)

    # -- paho's callbacks (run in the link's thread, inside loop_read/loop_write) -------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            # The broker closes the connection next; the backoff continues.
            self._problem(f"{self.broker.url} refused the connection: {reason_code}{_hint(str(reason_code))}")
            return
        # Unacknowledged messages from before an outage would arrive late and out of
        # order; the retained slots are published again instead, and lost results counted.
        lost = client.drop_out_messages()
        with self._lock:
            self._connected = True
            self.connections += 1
            self.dropped += sum(1 for message in lost if not message.retain)
            self._dirty = dict.fromkeys(self._slots)  # the broker may have lost them: publish every slot again
        self._in_flight.clear()
        self._stalled = False
        self._failures = 0
        self._last_problem = None
        log.info("mqtt: connected to %s as %s", self.broker.url, self.client_id)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected, self._connected = self._connected, False
        self._in_flight.clear()
        self._stalled = False
        if was_connected and not self._closing:
            log.warning("mqtt: lost the connection to %s (%s); reconnecting", self.broker.url, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.published += 1


def encode(payload: Any) -> bytes:
    """Text as UTF-8; a callable's result, or anything else, as compact JSON."""
    if callable(payload):
        payload = payload()
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def describe(exc: BaseException) -> str:
    """One line on why a connection attempt failed, with what to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker's TLS certificate is not trusted ({exc.verify_message}); check [mqtt] ca_file"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc}); is the port a TLS (mqtts) port? check cert_file and key_file"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running, and on this port?)"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer within {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc)


def _hint(reason: str) -> str:
    lowered = reason.lower()
    if "password" in lowered or "authori" in lowered:
        return " (check [mqtt] username and password_file)"
    if "identifier" in lowered:
        return " (check [mqtt] client_id)"
    return ""
