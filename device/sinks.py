"""Where results go: JSON lines (stdout or a file) or one human line per result.

Every sink takes plain dicts, so adding one (MQTT, HTTP, GPIO) means writing
one small class with ``emit`` and ``close``.
"""

from __future__ import annotations

import json
import sys
from abc import ABC, abstractmethod
from enum import Enum
from pathlib import Path
from typing import IO

from .errors import EdgeclassError


class OutputFormat(str, Enum):
    JSONL = "jsonl"
    HUMAN = "human"


class Sink(ABC):
    """Receives result and stats records (plain dicts with an ``event`` key)."""

    @abstractmethod
    def emit(self, record: dict) -> None: ...

    def close(self) -> None:
        pass

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _StreamSink(Sink):
    def __init__(self, path: str | Path | None) -> None:
        self._owned = path not in (None, "-")
        if self._owned:
            try:
                # Line-buffered append: a reader (tail -f, a log shipper) sees
                # whole records, and a restart never truncates earlier results.
                self._stream: IO[str] = open(path, "a", buffering=1, encoding="utf-8")
            except OSError as exc:
                raise EdgeclassError(f"{path}: cannot open for writing results ({exc.strerror})") from None
        else:
            self._stream = sys.stdout

    def _write(self, line: str) -> None:
        try:
            self._stream.write(line + "\n")
            if not self._owned:
                self._stream.flush()
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): stop writing, not a crash.
            raise SystemExit(0) from None

    def close(self) -> None:
        if self._owned and not self._stream.closed:
            self._stream.close()


class JsonLinesSink(_StreamSink):
    """One compact JSON object per line."""

    def emit(self, record: dict) -> None:
        self._write(json.dumps(record, separators=(",", ":")))


class HumanSink(_StreamSink):
    """One readable line per result; stats lines start with '#'."""

    def emit(self, record: dict) -> None:
        event = record.get("event")
        if event == "stats":
            self._write(
                f"# {record['fps']:.1f} fps, latency p50 {record['latency_ms_p50']:.1f} ms p95 "
                f"{record['latency_ms_p95']:.1f} ms, {record['frames']} frames, {record['dropped']} dropped"
            )
            return
        top = record.get("top_k") or []
        rest = "  ".join(f"{t['label']} {t['score']:.2f}" for t in top[1:])
        self._write(
            f"{record['time']}  #{record['frame']:<6} {record['label']:<20} {record['score']:.2f}  "
            f"({record['latency_ms']:.0f} ms)" + (f"  | {rest}" if rest else "")
        )


def open_sink(fmt: OutputFormat | str, path: str | Path | None = None) -> Sink:
    """The sink for ``fmt`` writing to ``path`` (``None`` or ``"-"``: stdout)."""
    fmt = OutputFormat(fmt)
    return JsonLinesSink(path) if fmt is OutputFormat.JSONL else HumanSink(path)
