"""The outputs' sections of the configuration: ``[output]`` (the result stream) and ``[uncertain]``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..settings import choice, integer, number, output_path, path, setting


@dataclass(frozen=True)
class OutputConfig:
    """[output]: where results go."""

    format: str = setting("jsonl", choice("jsonl", "human"), "jsonl or human", restart=True)
    path: str | Path = setting("-", output_path, '"-" = stdout (the journal under systemd), else a file', restart=True)
    emit: str = setting("changes", choice("changes", "all"), "changes (plus heartbeat) or every frame")
    stats_interval: float = setting(60.0, number(0, unit=" seconds"), "seconds between fps/latency records; 0 = none")


@dataclass(frozen=True)
class UncertainConfig:
    """[uncertain]: keep frames the model was unsure about, for later labelling."""

    dir: Path | None = setting(None, path, "folder for JPEG + JSON sidecars; unset = off")
    threshold: float = setting(0.3, number(0, 1), "save frames whose top score is below this")
    max_per_minute: int = setting(6, integer(1), "rate limit")
    max_mb: float = setting(200.0, number(0, low_open=True, unit=" MB"), "disk cap; oldest frames are removed first")
