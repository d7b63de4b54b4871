"""The building blocks of the configuration schema: a checked field, and the checkers.

Each room declares its own section of ``device.toml`` as a frozen dataclass
whose fields are made with :func:`setting` (the pipeline's ``[model]``,
``[source]`` and ``[decision]``, the outputs' ``[output]`` and
``[uncertain]``, the service's ``[service]``), and the frame loop and outputs
take those dataclasses as they are. :mod:`edgeclass.device.service.config`
gathers the sections into one schema and reads the file. So a key exists,
has a default and is validated in exactly one place.

A checker takes ``(value, base_dir)`` and returns the converted value, or
raises :class:`Invalid` with the end of a sentence that the caller completes
with the place and key: ``device.toml:12: [decision] threshold = 1.5 must be
between 0 and 1``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import field
from pathlib import Path
from typing import Any, Callable

Checker = Callable[[Any, Path], Any]


class Invalid(ValueError):
    """A checker's complaint about one value."""


def setting(default: Any, check: Checker, help: str, *, restart: bool = False, secret: bool = False) -> Any:
    """A dataclass field with its checker and one line of help.

    ``restart``: a reload cannot apply a change to it (it is named as needing a
    restart). ``secret``: its value never appears in logs or messages.
    """
    return field(default=default, metadata={"check": check, "help": help, "restart": restart, "secret": secret})


def integer(minimum: int) -> Checker:
    def check(value: Any, base: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"must be a whole number of at least {minimum}")
        if value < minimum:
            raise Invalid(f"must be at least {minimum}")
        return value
    return check


def number(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False,
           unit: str = "") -> Checker:
    def describe() -> str:
        if high == math.inf:
            return f"must be {'greater than' if low_open else 'at least'} {low:g}{unit}"
        if high_open:
            return f"must be {'greater than' if low_open else 'at least'} {low:g} and less than {high:g}"
        return f"must be between {low:g} and {high:g}"

    def check(value: Any, base: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Invalid(describe())
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            raise Invalid(describe())
        return float(value)
    return check


def choice(*choices: str) -> Checker:
    def check(value: Any, base: Path) -> str:
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(json.dumps(c) for c in choices)}")
        return value
    return check


def boolean(value: Any, base: Path) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def text(value: Any, base: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be a non-empty string")
    return value


def path(value: Any, base: Path) -> Path:
    """A path; relative ones resolve against ``base`` (the config file's directory)."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be a non-empty path string")
    result = Path(value)
    return result if result.is_absolute() else base / result


def output_path(value: Any, base: Path) -> str | Path:
    """``"-"`` (standard output) or a path."""
    if value == "-":
        return "-"
    return path(value, base)


_NOT_A_PATH = re.compile(r"^(\d+|[a-z][a-z0-9+.-]*://.*|picamera2?(:.*)?)$", re.IGNORECASE)


def source(value: Any, base: Path) -> str:
    """Camera index, URL and picamera2 stay as written; anything else is a path (device, video, folder)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise Invalid('must be a camera index, "/dev/videoN", an rtsp:// or http:// URL, a video file, '
                      'an image folder or "picamera2"')
    value = str(value)
    if _NOT_A_PATH.match(value) or Path(value).is_absolute():
        return value
    return str(base / value)
