"""Judging the service's health from its state file: ``edgeclass service status`` and deploy's check."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import printable


@dataclass(frozen=True)
class Health:
    """The verdict on a state file: healthy, or the reasons it is not."""

    healthy: bool
    problems: tuple[str, ...] = ()
    state: dict[str, Any] = field(default_factory=dict)
    age: float | None = None  # seconds since the service last wrote the state

    def to_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "problems": list(self.problems),
                "age_s": None if self.age is None else round(self.age, 3), "state": self.state}


def check_health(state: dict[str, Any] | None, *, max_age: float = 15.0, now: float | None = None,
                 missing: str | None = None) -> Health:
    """Healthy = the process is alive, wrote its state within ``max_age`` seconds, and is classifying frames.

    ``last_error`` is reported but not judged: it may be a camera hiccup the
    service already recovered from.
    """
    if state is None:
        return Health(False, (missing or "no state file",))
    now = time.time() if now is None else now
    problems = []
    pid = state.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        problems.append(f"process {pid} is not running")
    updated = state.get("updated_at")
    age = now - updated if isinstance(updated, (int, float)) else None
    if age is None:
        problems.append("state has no updated_at")
    elif age > max_age:
        problems.append(f"state is {age:.0f} s old (more than {max_age:g} s): the frame loop is not running")
    if not (isinstance(state.get("frames"), int) and state["frames"] > 0):
        problems.append("no frames classified yet")
    fps = state.get("fps")
    if isinstance(fps, (int, float)) and fps <= 0:
        problems.append("0 fps: frames are not arriving")
    return Health(not problems, tuple(problems), state, age)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by the service user
    return True


def describe_health(health: Health) -> str:
    """A few lines for a person at a terminal."""
    s = health.state
    lines = [f"edgeclass: {'healthy' if health.healthy else 'NOT healthy'}"]
    lines += [f"  problem: {p}" for p in health.problems]
    if s:
        up = ""
        if isinstance(s.get("started_at"), (int, float)) and isinstance(s.get("updated_at"), (int, float)):
            up = f", up {_duration(s['updated_at'] - s['started_at'])}"
        age = f", updated {health.age:.1f} s ago" if health.age is not None else ""
        lines.append(f"  pid {s.get('pid')}{up}{age}")
        if s.get("status"):
            lines.append(f"  status: {s['status']}")
        if s.get("bundle_name") or s.get("bundle_path"):
            lines.append(f"  bundle {s.get('bundle_name', '?')} ({s.get('bundle_path', '?')})")
        if s.get("model"):
            where = {"edgetpu": "the Edge TPU", "cpu": "the CPU"}.get(s.get("backend"), s.get("backend"))
            lines.append(f"  model {s['model']} on {where} ({s.get('interpreter')}); "
                         f"edgetpu = {s.get('edgetpu_setting')}")
        if s.get("source"):
            size = f" at {s['resolution']}" if s.get("resolution") else ""
            lines.append(f"  source {s['source']}{size}")
        fps = s.get("fps")
        lines.append(f"  {fps:.1f} fps, " if isinstance(fps, (int, float)) else "  ")
        lines[-1] += f"{s.get('frames', 0)} frames, label {s.get('label')}"
        if "dropped" in s or "reopens" in s:
            lines[-1] += f"; {s.get('dropped', 0)} dropped, {s.get('reopens', 0)} reopens"
        lines.append(f"  last error: {s.get('last_error') or 'none'}")
        known = {"pid", "started_at", "updated_at", "fps", "frames", "label", "last_error", "bundle_name",
                 "bundle_path", "status", "model", "backend", "interpreter", "edgetpu_setting", "source",
                 "resolution", "dropped", "reopens"}
        lines += [f"  {k}: {v}" for k, v in s.items() if k not in known]
    return "\n".join(printable(line) for line in lines)  # the label and bundle name are a bundle's text


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"
