"""The service configuration: ``edgeclass run --config /etc/edgeclass/device.toml``.

One frozen dataclass per TOML section, gathered in :class:`DeviceConfig`. The
dataclass fields *are* the schema: each carries a checker in its metadata, so
a key exists, has a default and is validated in exactly one place.

Values come in layers, highest precedence last::

    built-in defaults < bundle defaults < config file < command line

Each layer is a nested ``{section: {key: value}}`` dict in which ``None``
means "not given" (:func:`resolve`). Every layer is checked before merging, so
a bad value is refused by name where it came from, for the file with its line
number: ``device.toml:12: [decision] threshold = 1.5 must be between 0 and 1``.
Relative paths in the file resolve against the file's directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (pyproject installs tomli there)
    import tomli as tomllib

from .errors import EdgeclassError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/etc/edgeclass/device.toml")


class ConfigError(EdgeclassError):
    """A config file (or option) has an unknown key or a bad value."""


class _Bad(ValueError):
    """A checker's complaint, completed with the place and key by the caller."""


# ---------------------------------------------------------------- checkers
# Each takes (value, base_dir) and returns the converted value or raises _Bad
# with the end of a sentence: "[section] key = value <message>".

Checker = Callable[[Any, Path], Any]


def _integer(minimum: int) -> Checker:
    def check(value: Any, base: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"must be a whole number of at least {minimum}")
        if value < minimum:
            raise _Bad(f"must be at least {minimum}")
        return value
    return check


def _number(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False, unit: str = "") -> Checker:
    def describe() -> str:
        if high == math.inf:
            return f"must be {'greater than' if low_open else 'at least'} {low:g}{unit}"
        if high_open:
            return f"must be {'greater than' if low_open else 'at least'} {low:g} and less than {high:g}"
        return f"must be between {low:g} and {high:g}"

    def check(value: Any, base: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Bad(describe())
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            raise _Bad(describe())
        return float(value)
    return check


def _choice(*choices: str) -> Checker:
    def check(value: Any, base: Path) -> str:
        if value not in choices:
            raise _Bad(f"must be one of {', '.join(json.dumps(c) for c in choices)}")
        return value
    return check


def _path(value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("must be a non-empty path string")
    path = Path(value)
    return path if path.is_absolute() else base / path


def _output_path(value: Any, base: Path) -> str | Path:
    if value == "-":
        return "-"
    return _path(value, base)


_NOT_A_PATH = re.compile(r"^(\d+|[a-z][a-z0-9+.-]*://.*|picamera2?(:.*)?)$", re.IGNORECASE)


def _source(value: Any, base: Path) -> str:
    """Camera index, URL and picamera2 stay as written; anything else is a path (device, video, folder)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise _Bad('must be a camera index, "/dev/videoN", an rtsp:// or http:// URL, a video file, an image folder or "picamera2"')
    text = str(value)
    if _NOT_A_PATH.match(text) or Path(text).is_absolute():
        return text
    return str(base / text)


def _opt(default: Any, check: Checker, help: str) -> Any:
    return field(default=default, metadata={"check": check, "help": help})


# ---------------------------------------------------------------- schema


@dataclass(frozen=True)
class ModelConfig:
    """[model]: which bundle runs, and where."""

    bundle: Path = _opt(Path("/var/lib/edgeclass/current"), _path, "bundle directory (the deploy 'current' symlink)")
    threads: int | None = _opt(None, _integer(1), "interpreter threads; unset = all cores")
    edgetpu: str = _opt("auto", _choice("auto", "on", "off"), "use model_edgetpu.tflite when possible")


@dataclass(frozen=True)
class SourceConfig:
    """[source]: the camera and what to do when it misbehaves."""

    source: str = _opt("/dev/video0", _source, "camera index, /dev/videoN, URL, video file, image folder or picamera2")
    width: int | None = _opt(None, _integer(1), "capture width; unset = the camera's default")
    height: int | None = _opt(None, _integer(1), "capture height")
    fps: float | None = _opt(None, _number(0, low_open=True), "capture frame rate")
    stall_timeout: float = _opt(5.0, _number(0, low_open=True, unit=" seconds"), "seconds without a frame before reopening")
    give_up_after: float = _opt(300.0, _number(0, unit=" seconds"), "seconds without a good frame before exiting non-zero; 0 = never")
    reopen_backoff_max: float = _opt(30.0, _number(0, low_open=True, unit=" seconds"), "longest wait between reopen attempts")


@dataclass(frozen=True)
class DecisionConfig:
    """[decision]: from scores to an answer."""

    top_k: int = _opt(3, _integer(1), "labels per result")
    threshold: float = _opt(0.5, _number(0, 1), "below this smoothed score the answer is 'unknown'")
    # Weight kept from past frames in the exponential moving average (the
    # runtime's convention): 0 = no smoothing; 1 would never update, so refused.
    smoothing: float = _opt(0.0, _number(0, 1, high_open=True), "moving-average weight of past frames, 0 <= s < 1")
    heartbeat: float = _opt(10.0, _number(0, low_open=True, unit=" seconds"), "seconds between repeats of an unchanged label")


@dataclass(frozen=True)
class OutputConfig:
    """[output]: where results go."""

    format: str = _opt("jsonl", _choice("jsonl", "human"), "jsonl or human")
    path: str | Path = _opt("-", _output_path, '"-" = stdout (the journal under systemd), else a file')
    emit: str = _opt("changes", _choice("changes", "all"), "changes (plus heartbeat) or every frame")
    stats_interval: float = _opt(60.0, _number(0, unit=" seconds"), "seconds between fps/latency records; 0 = none")


@dataclass(frozen=True)
class ServiceConfig:
    """[service]: the state file that ``edgeclass service status`` and deploy read."""

    state_file: Path = _opt(Path("/run/edgeclass/state.json"), _path, "JSON health file, rewritten atomically")
    state_interval: float = _opt(2.0, _number(0, low_open=True, unit=" seconds"), "seconds between state file updates")


@dataclass(frozen=True)
class UncertainConfig:
    """[uncertain]: keep frames the model was unsure about, for later labelling."""

    dir: Path | None = _opt(None, _path, "folder for JPEG + JSON sidecars; unset = off")
    threshold: float = _opt(0.3, _number(0, 1), "save frames whose top score is below this")
    max_per_minute: int = _opt(6, _integer(1), "rate limit")
    max_mb: float = _opt(200.0, _number(0, low_open=True, unit=" MB"), "disk cap; oldest frames are removed first")


@dataclass(frozen=True)
class DeviceConfig:
    """The whole service configuration (all sections)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    uncertain: UncertainConfig = field(default_factory=UncertainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested ``{section: {key: value}}``: the built-in defaults layer when called on ``DeviceConfig()``."""
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(DeviceConfig)}  # type: ignore[misc]


def _fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


# ---------------------------------------------------------------- layers


def check_values(values: Mapping[str, Any] | None, where: Callable[[str, str | None], str], base: Path) -> dict[str, dict[str, Any]]:
    """Check one layer's names and values; return it converted (paths resolved against ``base``).

    ``where(section, key)`` names the origin for messages ("device.toml:12",
    "command line"). ``None`` values mean "not given" and are dropped.
    """
    checked: dict[str, dict[str, Any]] = {}
    for section, table in (values or {}).items():
        if section not in SECTIONS:
            raise ConfigError(f"{where(section, None)}: unknown section [{section}]"
                              f" ({_suggest(section, SECTIONS)}sections: {', '.join(SECTIONS)})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where(section, None)}: {section} must be a [{section}] table of settings, got {_toml(table)}")
        known = _fields(section)
        out: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{where(section, key)}: [{section}] unknown key {key!r}"
                                  f" ({_suggest(key, known)}known: {', '.join(known)})")
            if value is None:
                continue
            try:
                out[key] = known[key].metadata["check"](value, base)
            except _Bad as exc:
                raise ConfigError(f"{where(section, key)}: [{section}] {key} = {_toml(value)} {exc}") from None
        checked[section] = out
    return checked


def resolve(*layers: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Merge layers given lowest precedence first (defaults, bundle, file, CLI); ``None`` = not given.

    Layers should already be checked (:func:`check_values`); a ``None`` layer
    or value never overrides a lower one.
    """
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, table in (layer or {}).items():
            for key, value in (table or {}).items():
                if value is not None:
                    merged.setdefault(section, {})[key] = value
    return merged


def build(values: Mapping[str, Mapping[str, Any]]) -> DeviceConfig:
    """The frozen config from merged, checked values; missing keys take the built-in defaults."""
    return DeviceConfig(**{name: cls(**values.get(name, {})) for name, cls in SECTIONS.items()})


def read_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """The file layer: parsed, checked, paths resolved against the file's directory."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (a commented default is in systemd/device.toml)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key, value in data.items():
        if not isinstance(value, dict) and key not in SECTIONS:
            owner = next((s for s in SECTIONS if key in _fields(s)), None)
            hint = f"; put it under [{owner}]" if owner else ""
            raise ConfigError(f"{_where_in(path, text)(None, key)}: {key} is outside any section{hint}")
    return check_values(data, _where_in(path, text), path.parent.absolute())


def load_config(path: str | Path | None = None, *, bundle_values: Mapping | None = None,
                cli_values: Mapping | None = None) -> DeviceConfig:
    """The effective config: defaults < bundle < file (if ``path``) < command line.

    ``cli_values`` is nested like the file (``{"decision": {"threshold": 0.7}}``),
    with ``None`` for options the user did not give; relative CLI paths resolve
    against the current directory.
    """
    file_values = read_config_file(path) if path is not None else {}
    cli = check_values(cli_values, lambda s, k: "command line", Path.cwd())
    bundle = check_values(bundle_values, lambda s, k: "bundle.json defaults", Path.cwd())
    return build(resolve(DeviceConfig().to_dict(), bundle, file_values, cli))


def bundle_defaults(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The optional ``"defaults"`` object of a bundle manifest (e.g. a tuned ``decision.threshold``).

    Unknown names are ignored with a warning rather than refused: a bundle made
    by a newer edgeclass must still run here.
    """
    raw = manifest.get("defaults") or {}
    if not isinstance(raw, Mapping):
        log.warning("bundle.json: 'defaults' is not an object; ignored")
        return {}
    kept: dict[str, dict[str, Any]] = {}
    for section, table in raw.items():
        if section not in SECTIONS or not isinstance(table, Mapping):
            log.warning("bundle.json: defaults.%s is not a known section; ignored", section)
            continue
        known = _fields(section)
        for key, value in table.items():
            if key in known:
                kept.setdefault(section, {})[key] = value
            else:
                log.warning("bundle.json: defaults.%s.%s is not a known setting; ignored", section, key)
    return kept


# ---------------------------------------------------------------- messages


_HEADER = re.compile(r"^\[\s*([A-Za-z0-9_\-\"' .]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^(?:\"([^\"]+)\"|'([^']+)'|([A-Za-z0-9_\-.]+))\s*=")


def _where_in(path: Path, text: str) -> Callable[[str | None, str | None], str]:
    """``where(section, key)`` -> "file:line" by scanning the text (tomllib gives no positions)."""
    lines = text.splitlines()

    def where(section: str | None, key: str | None) -> str:
        line = _find_line(lines, section, key)
        return f"{path}:{line}" if line else str(path)

    return where


def _find_line(lines: list[str], section: str | None, key: str | None) -> int | None:
    current: str | None = None
    fallback: int | None = None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header and not line.startswith("[["):
            current = header.group(1).replace('"', "").replace("'", "").strip()
            if current == section and key is None:
                return number
            continue
        match = _KEY.match(line)
        if not match:
            continue
        name = next(g for g in match.groups() if g is not None)
        if current == section and name == key:
            return number
        if current is None:
            # Top-level forms: "decision.threshold = 1.5", "decision = {threshold = 1.5}", a stray "key = 1".
            if section is None and name == key:
                return number
            if section is not None and name in (f"{section}.{key}", section):
                if name == f"{section}.{key}" or key is None:
                    return number
                fallback = fallback or number
    return fallback


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)
