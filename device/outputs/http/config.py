"""``[http]``: the live page, the API and ``/metrics`` on the device (off unless ``listen`` is set)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...settings import Invalid, integer, number, path, setting
from .access import parse_listen


def listen_address(value: Any, base: Path) -> str:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6, a bare ``PORT`` = 127.0.0.1), normalised to ``HOST:PORT``."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise Invalid('must be "HOST:PORT", for example "127.0.0.1:8080"')
    try:
        host, port = parse_listen(str(value))
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class HttpConfig:
    """[http]: a live view and an API in the browser; off by default."""

    listen: str | None = setting(None, listen_address, 'HOST:PORT to serve on, e.g. "127.0.0.1:8080"; unset = off; '
                                 "any address but loopback needs token_file")
    token_file: Path | None = setting(None, path, "file holding the access token (Authorization: Bearer, or ?token=)")
    stream_fps: float = setting(10.0, number(0, low_open=True, unit=" frames a second"),
                                "most JPEG frames a second for viewers (encoded only while someone watches)")
    jpeg_quality: int = setting(80, integer(1), "JPEG quality of the live view, 1-100")
    dataset: Path | None = setting(None, path, "dataset folder the collect and review pages save into (DATASET/<label>/); "
                                   "unset = those pages are off")
