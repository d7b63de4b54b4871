"""The result stream: JSON lines (stdout or a file) or one human line per result.

:class:`StreamOutput` decides *which* results become lines (every frame, or
only changes plus a heartbeat) and adds a statistics record every
``stats_interval`` seconds; a :class:`LineFormat` decides how a record reads.
Writing is synchronous: a line-buffered file or the journal's pipe takes a
line in microseconds, and a reader sees whole records.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import IO

from ..errors import EdgeclassError, printable
from ..pipeline.decide import Decision
from ..pipeline.loop import Output, Runner, StatusHook
from ..pipeline.sources import Frame
from .config import OutputConfig
from .figures import FpsMeter, run_figures

log = logging.getLogger(__name__)

class OutputFormat(str, Enum):
    JSONL = "jsonl"
    HUMAN = "human"


class Emit(str, Enum):
    """Which results reach the stream."""

    ALL = "all"  # every classified frame
    CHANGES = "changes"  # when the decided label changes, plus a heartbeat


def iso_time(ts: float) -> str:
    """A Unix time as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def result_record(event: str, frame: Frame, decision: Decision) -> dict:
    """The JSON object of one result, as every output that publishes results shapes it."""
    return {
        "event": event,
        "time": iso_time(decision.time),
        "ts": round(decision.time, 3),
        "frame": frame.index,
        "label": decision.label,
        "score": round(decision.score, 4),
        "top_k": [{"label": s.label, "score": round(s.score, 4)} for s in decision.top_k],
        "latency_ms": round(decision.latency_ms, 2),
        "infer_ms": round(decision.infer_ms, 2),
    }


def format_json(record: dict) -> str:
    """One compact JSON object."""
    return json.dumps(record, separators=(",", ":"))


def format_human(record: dict) -> str:
    """One readable line; statistics lines start with '#'."""
    if record.get("event") == "stats":
        return (f"# {record['fps']:.1f} fps, latency p50 {record['latency_ms_p50']:.1f} ms p95 "
                f"{record['latency_ms_p95']:.1f} ms, {record['frames']} frames, {record['dropped']} dropped")
    top = record.get("top_k") or []
    rest = "  ".join(f"{printable(t['label'])} {t['score']:.2f}" for t in top[1:])
    return (f"{record['time']}  #{record['frame']:<6} {printable(record['label']):<20} {record['score']:.2f}  "
            f"({record['latency_ms']:.0f} ms)" + (f"  | {rest}" if rest else ""))


FORMATTERS = {OutputFormat.JSONL: format_json, OutputFormat.HUMAN: format_human}


class StreamOutput(Output, StatusHook):
    """Result and statistics records as lines on stdout or appended to a file."""

    name = "stream"
    sections = ("output", "decision")

    def __init__(self, fmt: OutputFormat | str = OutputFormat.JSONL, path: str | Path | None = None, *,
                 emit: Emit | str = Emit.ALL, heartbeat: float = 10.0, stats_interval: float = 0.0) -> None:
        self.format = FORMATTERS[OutputFormat(fmt)]
        self.emit = Emit(emit)
        self.heartbeat = heartbeat
        self.stats_interval = stats_interval
        self.write_errors = 0
        self._owned = path not in (None, "-")
        self._path = path
        if self._owned:
            try:
                # Line-buffered append: a reader (tail -f, a log shipper) sees
                # whole records, and a restart never truncates earlier results.
                self._stream: IO[str] = open(path, "a", buffering=1, encoding="utf-8")
            except OSError as exc:
                raise EdgeclassError(f"{path}: cannot open for writing results ({exc.strerror})") from None
        else:
            self._stream = sys.stdout
        self._run: Runner | None = None
        self._last_emit = -float("inf")
        self._fps = FpsMeter(0, time.monotonic())
        self._next_stats: float | None = None

    @classmethod
    def from_config(cls, config) -> "StreamOutput":
        o: OutputConfig = config.output
        return cls(o.format, o.path, emit=o.emit, heartbeat=config.decision.heartbeat, stats_interval=o.stats_interval)

    def start(self, run: Runner) -> None:
        self._run = run
        run.add_status_hook(self)  # results_lost in the state file and /api/status
        now = time.monotonic()
        self._fps = FpsMeter(run.stats.frames, now)
        self._next_stats = now + self.stats_interval if self.stats_interval > 0 else None

    def write(self, frame: Frame, decision: Decision) -> None:
        now = time.monotonic()
        event = self._event(decision, now - self._last_emit)
        if event is not None:
            self._last_emit = now
            self._line(self.format(result_record(event, frame, decision)))
        if self._next_stats is not None and now >= self._next_stats:
            self._next_stats = now + self.stats_interval
            self._line(self.format(self._stats_record(now)))

    def status(self) -> dict:
        """The run's status keys from this output: how many result lines could not be written.

        (No ``healthy`` verdict: lost results do not make the classifier unhealthy; the hook's default abstains.)
        """
        return {"results_lost": self.write_errors}

    def _event(self, decision: Decision, since_emit: float) -> str | None:
        if self.emit is Emit.ALL:
            return "change" if decision.changed else "frame"
        if decision.changed:
            return "change"
        if since_emit >= self.heartbeat:
            return "heartbeat"
        return None

    def _stats_record(self, now: float) -> dict:
        figures = run_figures(self._run, self._fps.read(self._run.stats.frames, now))
        return {"event": "stats", "time": iso_time(time.time()), **figures}

    def _line(self, line: str) -> None:
        try:
            self._stream.write(line + "\n")
            if not self._owned:
                self._stream.flush()
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): stop writing, not a crash.
            raise SystemExit(0) from None
        except OSError as exc:
            # A full disk must not end the service: the results are lost, the
            # classification (and the journal, the state file) go on.
            self.write_errors += 1
            if self.write_errors == 1:
                log.warning("%s: cannot write results (%s); counting the lost lines and carrying on",
                            self._path or "stdout", exc.strerror or exc)

    def close(self) -> None:
        if self._owned and not self._stream.closed:
            try:
                self._stream.close()
            except OSError:  # the last buffered line on a full disk
                self.write_errors += 1
