"""Who may see the camera: the listen address, and the access token needed off loopback.

A page that shows a camera must not be open to a whole network by accident,
so listening on any address but loopback requires a token, read from a file
(``[http] token_file``) so it never sits in ``device.toml``, the command line
or the logs. Clients send it as ``Authorization: Bearer TOKEN`` or, for a
link opened in a browser, ``?token=TOKEN``. It is compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from pathlib import Path

from ...errors import EdgeclassError

MIN_TOKEN_LENGTH = 16


class AccessError(EdgeclassError):
    """The HTTP listener cannot be started as configured."""


def parse_listen(text: str) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[::1]:PORT"``, ``":PORT"`` (every address) or ``"PORT"`` (127.0.0.1) -> ``(host, port)``."""
    text = text.strip()
    if text.isdigit():
        host, port = "127.0.0.1", text
    elif text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f'must be "[IPv6]:PORT", got "{text}"')
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f'must be "HOST:PORT" (IPv6 as "[::1]:PORT"), got "{text}"')
        host = host or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"has port {port!r}, expected a number from 1 to 65535")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is on this machine only (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace removed); an :class:`AccessError` naming the file otherwise."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise AccessError(f"{path}: no such token file; create one with: "
                          f"openssl rand -hex 24 > {path} && chmod 600 {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AccessError(f"{path}: cannot read the token file ({getattr(exc, 'strerror', None) or exc})") from None
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise AccessError(f"{path}: the token must be one word of at least {MIN_TOKEN_LENGTH} characters "
                          f"(got {len(token)} characters); make one with: openssl rand -hex 24 > {path}")
    return token


class Access:
    """The token check for one listener (``token=None``: open, allowed on loopback only)."""

    def __init__(self, token: str | None) -> None:
        self._token = None if token is None else token.encode("utf-8")

    @property
    def required(self) -> bool:
        return self._token is not None

    def allows(self, authorization: str | None, query_token: str | None) -> bool:
        """Whether a request with this ``Authorization`` header and ``?token=`` value may proceed."""
        if self._token is None:
            return True
        offered = None
        if authorization and authorization[:7].lower() == "bearer ":
            offered = authorization[7:].strip()
        elif query_token:
            offered = query_token
        # compare_digest takes time that depends on the length only, not on where the bytes differ.
        return offered is not None and hmac.compare_digest(offered.encode("utf-8"), self._token)


def access_for(listen: str, token_file: Path | None) -> Access:
    """The :class:`Access` for ``[http] listen`` and ``token_file``, or an :class:`AccessError` in one line.

    Off loopback a token is required; on loopback one is used when given.
    """
    host, _ = parse_listen(listen)
    if token_file is None:
        if not is_loopback(host):
            raise AccessError(f"[http] listen {listen}: reachable from other machines, so it needs an access token: "
                              "set [http] token_file (or --http-token-file FILE) to a file holding one, "
                              "or listen on 127.0.0.1")
        return Access(None)
    return Access(read_token(token_file))
