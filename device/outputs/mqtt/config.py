"""``[mqtt]``: the broker, the topics, and what is published.

Off unless ``url`` is set (``edgeclass run --mqtt URL``). The password is
never a setting: ``password_file`` names a file holding it (readable by the
service's user only), so it stays out of ``device.toml``, the command line,
``ps`` and every log line. A URL with a user name or password in it is
refused rather than redacted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ...settings import Invalid, boolean, number, path, setting, text

SCHEMES = {"mqtt": (1883, False), "mqtts": (8883, True)}  # scheme -> (default port, TLS)


class Broker(NamedTuple):
    """Where the broker is, from ``[mqtt] url``."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        """The URL as logs show it (it never holds credentials: :func:`broker_url` refuses them)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def parse_broker(value: str) -> Broker:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` as a :class:`Broker`; :class:`Invalid` otherwise."""
    expected = "must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise Invalid(f"{expected} (the port is not a number from 1 to 65535)") from None
    if parts.scheme.lower() not in SCHEMES:
        raise Invalid(f"{expected}, got the scheme {parts.scheme + '://' if parts.scheme else 'none'}")
    if parts.username is not None or parts.password is not None:
        raise Invalid("must not hold a user name or password: set [mqtt] username, and password_file to a "
                      "file that holds the password")
    if not parts.hostname:
        raise Invalid(f"{expected} (no host name)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise Invalid(f"{expected}: a broker URL has no path (the topic prefix is [mqtt] topic)")
    default_port, tls = SCHEMES[parts.scheme.lower()]
    if port == 0:
        raise Invalid(f"{expected} (the port is not a number from 1 to 65535)")
    return Broker(parts.hostname, port or default_port, tls)


def broker_url(value: Any, base: Path) -> str:
    """A checker: a broker URL (kept as written; :func:`parse_broker` reads it)."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    parse_broker(value.strip())
    return value.strip()


_WILDCARDS = re.compile(r"[+#\x00]")


def topic_prefix(value: Any, base: Path) -> str:
    """A checker: a topic prefix to publish under, e.g. ``edgeclass/garden``."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be a topic prefix such as \"edgeclass/garden\"")
    if _WILDCARDS.search(value):
        raise Invalid("must not contain the MQTT wildcards + or #")
    if value.startswith(("/", "$")) or value.endswith("/") or "//" in value:
        raise Invalid("must not start with / or $, end with /, or have an empty level (//)")
    return value


def qos_level(value: Any, base: Path) -> int:
    """A checker: MQTT quality of service 0, 1 or 2."""
    if isinstance(value, bool) or value not in (0, 1, 2):
        raise Invalid("must be 0 (at most once), 1 (at least once) or 2 (exactly once)")
    return int(value)


@dataclass(frozen=True)
class MqttConfig:
    """[mqtt]: publish decisions to an MQTT broker, with Home Assistant discovery."""

    url: str | None = setting(None, broker_url, "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]; unset = off")
    topic: str | None = setting(None, topic_prefix, "topic prefix; unset = edgeclass/<hostname>")
    client_id: str | None = setting(None, text, "MQTT client id; unset = edgeclass-<hostname>-<random>")
    username: str | None = setting(None, text, "user name for the broker")
    password_file: Path | None = setting(None, path, "file holding the password (never the password itself)")
    ca_file: Path | None = setting(None, path, "mqtts: CA certificate(s) to verify the broker; unset = the system's")
    cert_file: Path | None = setting(None, path, "mqtts: client certificate (PEM) for brokers that ask for one")
    key_file: Path | None = setting(None, path, "mqtts: the client certificate's private key; unset = in cert_file")
    qos: int = setting(1, qos_level, "quality of service of every message: 0, 1 or 2")
    discovery: bool = setting(True, boolean, "publish Home Assistant discovery configs")
    discovery_prefix: str = setting("homeassistant", topic_prefix, "Home Assistant's discovery prefix")
    results_per_second: float = setting(0.0, number(0, unit=" messages a second"),
                                        "PREFIX/result: every frame, at most this many a second; 0 = off")
