"""The MQTT output: decisions to a broker (and Home Assistant), without ever slowing the frame loop.

:meth:`MqttOutput.write` runs in the frame loop and only decides what to
publish and hands it to the :class:`~.link.BrokerLink`: a record still to be
built (:func:`later`) put in a slot or a bounded queue, and a byte written to
a pipe to wake the link's thread. Building the record, JSON, the network,
reconnects and TLS all happen in that thread. The diagnostics record is built
in the frame loop (the monitor it reads lives there), once per stats interval.

The queue of :class:`~edgeclass.device.outputs.base.QueuedOutput` does not
fit here: the state must survive any number of drops (it is a slot, always
the latest, published again on every reconnection), and the thread that
publishes must also be the one that runs paho's network loop.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import stat
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import EdgeclassError
from ...pipeline.decide import Decision
from ...pipeline.loop import Output, Runner
from ...pipeline.sources import Frame
from ..figures import FpsMeter
from ..stream import result_record
from .config import Broker, MqttConfig, parse_broker
from .discovery import discovery_messages
from .messages import OFFLINE, ONLINE, Topics, default_prefix, diagnostics_record, hostname, topics_under

if TYPE_CHECKING:  # paho is imported only when MQTT is on
    from .link import BrokerLink

log = logging.getLogger(__name__)

DIAGNOSTICS_DEFAULT = 60.0  # seconds, when [output] stats_interval is 0 (no stats records)


class MqttOutput(Output):
    """Publishes state, availability, diagnostics, optional per-frame results and HA discovery."""

    name = "mqtt"
    sections = ("mqtt", "decision", "output")
    # A reload closes the old session before this one starts (see replace_outputs).
    one_at_a_time = True

    def __init__(self, link: "BrokerLink", topics: Topics, *, heartbeat: float = 10.0, diagnostics_interval: float = 60.0,
                 results_per_second: float = 0.0, discovery: list[tuple[str, dict]] = ()) -> None:
        self.link = link
        self.topics = topics
        self.heartbeat = heartbeat
        self.diagnostics_interval = diagnostics_interval
        self.result_gap = 1.0 / results_per_second if results_per_second > 0 else None
        self.discovery = list(discovery)
        self._run: Runner | None = None
        self._last_state = -float("inf")
        self._next_result = 0.0
        self._next_diagnostics = 0.0
        self._fps = FpsMeter(0, time.monotonic())
        self._closed = False

    @classmethod
    def from_config(cls, config) -> "MqttOutput | None":
        """The output ``[mqtt]`` asks for, or None when ``url`` is unset; files are read here, nothing connects yet."""
        m: MqttConfig = config.mqtt
        if m.url is None:
            return None
        broker = parse_broker(m.url)
        check_combination(m, broker)
        try:
            from .link import BrokerLink
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("paho"):
                raise EdgeclassError("[mqtt] url is set but paho-mqtt is not installed: "
                                     "pip install 'edgeclass[device]'") from None
            raise
        prefix = m.topic or default_prefix()
        topics = topics_under(prefix)
        link = BrokerLink(broker, will=(topics.availability, OFFLINE), qos=m.qos,
                          client_id=m.client_id or f"edgeclass-{hostname()}-{secrets.token_hex(3)}",
                          username=m.username, password=read_password(m.password_file),
                          tls=tls_context(m) if broker.tls else None)
        stats = config.output.stats_interval
        heartbeat = config.decision.heartbeat
        log.info("mqtt: publishing to %s under %s/ (state, availability, diagnostics%s)%s", broker.url, prefix,
                 ", result" if m.results_per_second > 0 else "",
                 f", Home Assistant discovery under {m.discovery_prefix}/" if m.discovery else "")
        return cls(link, topics, heartbeat=heartbeat, diagnostics_interval=stats if stats > 0 else DIAGNOSTICS_DEFAULT,
                   results_per_second=m.results_per_second,
                   discovery=discovery_messages(prefix, m.discovery_prefix, qos=m.qos, heartbeat=heartbeat)
                   if m.discovery else [])

    # -- the frame loop's calls -------------------------------------------------------

    def start(self, run: Runner) -> None:
        self._run = run
        now = time.monotonic()
        self._fps = FpsMeter(run.stats.frames, now)
        self._next_diagnostics = now + self.diagnostics_interval
        for topic, config in self.discovery:
            self.link.retain(topic, config)
        self.link.retain(self.topics.availability, ONLINE)
        self.link.start()

    def write(self, frame: Frame, decision: Decision) -> None:
        now = time.monotonic()
        if decision.changed or now - self._last_state >= self.heartbeat:
            self._last_state = now
            self.link.retain(self.topics.state, later("change" if decision.changed else "heartbeat", frame, decision))
        if self.result_gap is not None and now >= self._next_result:
            self._next_result = now + self.result_gap
            self.link.send(self.topics.result, later("change" if decision.changed else "frame", frame, decision))
        if now >= self._next_diagnostics:
            self._diagnostics(now)

    def idle(self) -> None:
        # A stalled camera still gets its diagnostics (0 fps) on time.
        now = time.monotonic()
        if self._run is not None and now >= self._next_diagnostics:
            self._diagnostics(now)

    def _diagnostics(self, now: float) -> None:
        self._next_diagnostics = now + self.diagnostics_interval
        run = self._run
        self.link.retain(self.topics.diagnostics,
                         diagnostics_record(run, self._fps.read(run.stats.frames, now), now, self.link.dropped))

    # -- for the service and /metrics -------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection (and not lost it since)."""
        return self.link.connected

    def stats(self) -> dict:
        """The connection's figures: connected, published, dropped, queued, connections."""
        return self.link.stats()

    def close(self) -> None:
        """Publish the latest state and ``offline``, then disconnect (at most a couple of seconds)."""
        if self._closed:
            return
        self._closed = True
        self.link.close()


def later(event: str, frame: Frame, decision: Decision) -> partial:
    """The result record, to be built when it is sent (in the link's thread): the frame loop only pays for this call.

    The frame is kept without its pixels, so a queued message never holds a camera picture.
    """
    return partial(result_record, event, frame._replace(rgb=None), decision)


def check_combination(m: MqttConfig, broker: Broker) -> None:
    """Settings that only make sense together; one line naming the keys."""
    if not broker.tls:
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(m, key) is not None:
                raise EdgeclassError(f"[mqtt] {key} is set but url {broker.url} is not TLS: "
                                     f"use mqtts://{broker.url.split('://', 1)[1]}")
    if m.key_file is not None and m.cert_file is None:
        raise EdgeclassError("[mqtt] key_file is set without cert_file: set both for a client certificate")
    if m.password_file is not None and m.username is None:
        raise EdgeclassError("[mqtt] password_file is set without username: MQTT sends a password only with a user name")


def read_password(path: Path | None) -> str | None:
    """The password from ``[mqtt] password_file`` (its first line); the file is named in errors, its content never."""
    if path is None:
        return None
    try:
        raw = Path(path).read_bytes()
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise EdgeclassError(f"{path}: [mqtt] password_file cannot be read ({exc.strerror})") from None
    try:
        password = raw.decode("utf-8").splitlines()[0] if raw.strip() else ""
    except UnicodeDecodeError:
        raise EdgeclassError(f"{path}: [mqtt] password_file is not UTF-8 text") from None
    if not password:
        raise EdgeclassError(f"{path}: [mqtt] password_file is empty: write the broker's password on its first line")
    if mode & stat.S_IROTH:
        log.warning("%s: [mqtt] password_file is readable by every user; chmod 600 it", path)
    return password


def tls_context(m: MqttConfig) -> ssl.SSLContext:
    """Certificate verification against ``ca_file`` (or the system's CAs), with the client certificate if set."""
    try:
        context = ssl.create_default_context(cafile=str(m.ca_file) if m.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise EdgeclassError(f"{m.ca_file}: [mqtt] ca_file cannot be loaded as PEM certificates "
                             f"({getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or exc})") from None
    if m.cert_file is not None:
        try:
            # An empty password instead of none: OpenSSL would prompt on the terminal for an encrypted key.
            context.load_cert_chain(str(m.cert_file), str(m.key_file) if m.key_file else None, password=b"")
        except (OSError, ssl.SSLError) as exc:
            raise EdgeclassError(f"{m.cert_file}: [mqtt] cert_file/key_file cannot be loaded as a PEM certificate and "
                                 f"its key ({getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or exc})") from None
    return context
