"""The service configuration: ``edgeclass run --config /etc/edgeclass/device.toml``.

One frozen dataclass per TOML section, each declared by the room that uses
it (``[model]``, ``[source]``, ``[decision]`` in
:mod:`edgeclass.device.pipeline.config`; ``[output]``, ``[uncertain]`` in
:mod:`edgeclass.device.outputs.config`; ``[mqtt]`` in
:mod:`edgeclass.device.outputs.mqtt.config`; ``[http]`` in
:mod:`edgeclass.device.outputs.http.config`; ``[service]`` here), gathered in
:class:`DeviceConfig`. The dataclass fields *are* the schema: each carries
its checker (:mod:`edgeclass.device.settings`), so a key exists, has a
default and is validated in exactly one place.

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
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (pyproject installs tomli there)
    import tomli as tomllib

from ..errors import EdgeclassError
from ..outputs.config import OutputConfig, UncertainConfig
from ..outputs.http.config import HttpConfig
from ..outputs.mqtt.config import MqttConfig
from ..pipeline.config import DecisionConfig, ModelConfig, SourceConfig
from ..pipeline.sources import redact
from ..settings import Invalid, number, path, setting

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/etc/edgeclass/device.toml")


class ConfigError(EdgeclassError):
    """A config file (or option) has an unknown key or a bad value."""


# ---------------------------------------------------------------- schema


@dataclass(frozen=True)
class ServiceConfig:
    """[service]: the state file that ``edgeclass service status`` and deploy read, and reloads."""

    state_file: Path = setting(Path("/run/edgeclass/state.json"), path, "JSON health file, rewritten atomically")
    state_interval: float = setting(2.0, number(0, low_open=True, unit=" seconds"), "seconds between state file updates")
    reload_timeout: float = setting(60.0, number(0, low_open=True, unit=" seconds"),
                                    "seconds a reload may take before it is given up (the old model keeps running); "
                                    "below the unit's TimeoutStartSec")


@dataclass(frozen=True)
class DeviceConfig:
    """The whole service configuration (all sections)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    uncertain: UncertainConfig = field(default_factory=UncertainConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    http: HttpConfig = field(default_factory=HttpConfig)

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
            except Invalid as exc:
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


# What a bundle's "defaults" may set: how scores become an answer, tuned with
# the model. Never where anything is read or written (paths, the source, the
# outputs) nor how the service runs: a bundle is data, never instructions.
BUNDLE_SETTABLE: dict[str, tuple[str, ...]] = {"decision": ("threshold", "top_k", "smoothing", "heartbeat")}


def bundle_defaults(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The usable part of a bundle manifest's optional ``"defaults"`` object (e.g. a tuned ``decision.threshold``).

    Only the keys in :data:`BUNDLE_SETTABLE` are kept. Anything else (a path,
    the source, an output target, a service key, or a name this edgeclass does
    not know) is ignored with one warning naming every refused key, so the
    bundle stays usable; a bad value of a kept key is refused later, by
    :func:`check_values`, like any other setting.
    """
    raw = manifest.get("defaults") or {}
    if not isinstance(raw, Mapping):
        log.warning("bundle.json: 'defaults' is not an object; ignored")
        return {}
    kept: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    for section, table in raw.items():
        allowed = BUNDLE_SETTABLE.get(section, ())
        if not isinstance(table, Mapping):
            refused.append(str(section))
            continue
        for key, value in table.items():
            if key in allowed:
                kept.setdefault(section, {})[key] = value
            else:
                refused.append(f"{section}.{key}")
    if refused:
        allowed_names = ", ".join(f"{s}.{k}" for s, keys in BUNDLE_SETTABLE.items() for k in keys)
        log.warning("bundle.json: defaults may set only %s; ignored: %s", allowed_names, ", ".join(refused))
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
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header and not line.startswith("[["):
            current = header.group(1).replace('"', "").replace("'", "").strip()
            if current == section and key is None:
                return lineno
            continue
        match = _KEY.match(line)
        if not match:
            continue
        name = next(g for g in match.groups() if g is not None)
        if current == section and name == key:
            return lineno
        if current is None:
            # Top-level forms: "decision.threshold = 1.5", "decision = {threshold = 1.5}", a stray "key = 1".
            if section is None and name == key:
                return lineno
            if section is not None and name in (f"{section}.{key}", section):
                if name == f"{section}.{key}" or key is None:
                    return lineno
                fallback = fallback or lineno
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
        return json.dumps(redact(value))  # a camera URL's password must not reach the journal
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)
