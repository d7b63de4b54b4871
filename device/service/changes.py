"""What a reload changes in the settings, said so that a person can check it.

A reload compares the configuration that is running with the one just read
(both fully resolved: built-in defaults, the bundle's defaults, the file and
the command line). Each difference is a :class:`Change`. Settings declared
with ``restart=True`` (the camera, the result stream's format and file) cannot
change under a running loop: :func:`hold_for_restart` keeps their running
values in the configuration that is applied, and the change is named as
waiting for a restart, every reload until that restart happens. Values are
shown with URL credentials removed, and a ``secret=True`` setting never shows
its value at all.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

from ..pipeline.sources import redact


class Change(NamedTuple):
    """One setting that differs between two configurations."""

    key: str  # "section.name"
    old: Any
    new: Any
    restart: bool  # only a restart applies it
    secret: bool  # its value is never shown

    def describe(self) -> str:
        if self.secret:
            return f"{self.key} (changed; value hidden)"
        return f"{self.key} {show(self.old)} -> {show(self.new)}"


def show(value: Any) -> str:
    """A setting's value as it reads in device.toml, credentials removed; ``unset`` for None."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, Path):
        value = str(value)
    return redact(json.dumps(value) if isinstance(value, str) else str(value))


def changed_settings(old, new) -> list[Change]:
    """Every setting whose value differs, in the order of the schema (section by section)."""
    changes = []
    for section in dataclasses.fields(old):
        a, b = getattr(old, section.name), getattr(new, section.name)
        for f in dataclasses.fields(a):
            before, after = getattr(a, f.name), getattr(b, f.name)
            if before != after:
                changes.append(Change(f"{section.name}.{f.name}", before, after,
                                      bool(f.metadata.get("restart")), bool(f.metadata.get("secret"))))
    return changes


def hold_for_restart(running, new):
    """``new`` with every ``restart=True`` setting kept at its ``running`` value: what a reload can apply."""
    sections = {}
    for section in dataclasses.fields(running):
        a, b = getattr(running, section.name), getattr(new, section.name)
        held = {f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.metadata.get("restart")}
        sections[section.name] = dataclasses.replace(b, **held) if held else b
    return dataclasses.replace(new, **sections)


def summary(changes: list[Change]) -> str:
    """``"decision.threshold 0.5 -> 0.7, ..."``, or ``"none"``."""
    return ", ".join(change.describe() for change in changes) or "none"
