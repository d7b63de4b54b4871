"""Where a device stands: its releases, its systemd unit and its health, asked over ssh and judged here.

Used by ``deploy --status`` and at the start of every deploy, so a deploy
whose connection was lost half-way is never a mystery: the next look says
which release is ``current``, which one the service really runs, whether it
is healthy, and what to do about a difference.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .options import DeployOptions
from .ssh import Session, last_line


@dataclass
class DeviceStatus:
    """One look at a device; ``problems`` holds queries that failed (the others still count)."""

    releases: dict | None = None  # `edgeclass bundle releases --json`
    unit: str = "unknown"  # `systemctl is-active`: active, inactive, failed, activating, ...
    health: dict | None = None  # `edgeclass service status --json`
    problems: list[str] = field(default_factory=list)

    @property
    def current(self) -> str | None:
        return (self.releases or {}).get("current")

    @property
    def previous(self) -> str | None:
        return (self.releases or {}).get("previous")

    @property
    def state(self) -> dict:
        return (self.health or {}).get("state") or {}

    @property
    def running(self) -> str | None:
        """The resolved bundle path the service classifies with, when it reported one."""
        path = self.state.get("bundle_path")
        return os.path.normpath(str(path)) if path else None

    @property
    def healthy(self) -> bool:
        return bool((self.health or {}).get("healthy"))

    def on(self, release: str | None) -> bool:
        return bool(release) and self.running == os.path.normpath(release)

    @property
    def interrupted(self) -> bool:
        """``current`` moved to a release the service never ran, while it still runs the one before it."""
        return bool(self.current and self.running and not self.on(self.current) and self.on(self.previous))

    def verdict(self) -> str | None:
        """None when the service is healthy on ``current``; else why not, with what to do."""
        if self.releases is None:
            return "the releases could not be listed (see the problem above)"
        if self.current is None:
            return "no release is installed yet (deploy one)"
        if not self.healthy:
            problems = "; ".join((self.health or {}).get("problems") or ["no health report"])
            return f"the service is not healthy ({problems}); service {self.unit}"
        if self.interrupted:
            return (f"the service still runs {_name(self.running)} but current is {_name(self.current)}: a deploy "
                    "stopped after installing it; deploy again to switch over (or roll back with "
                    "'edgeclass bundle rollback' on the device)")
        if not self.on(self.current):
            return f"the service runs {_name(self.running) or 'an unknown bundle'}, not current {_name(self.current)}"
        problem = edgetpu_problem(self.state, bool((self.releases or {}).get("current_has_edgetpu_model")))
        return problem

    def lines(self) -> list[str]:
        """A few lines for a person: current, service, what runs, verdict."""
        r = self.releases or {}
        count = len(r.get("releases") or [])
        previous = f"previous {_name(self.previous)}; " if self.previous else ""
        lines = [f"current   {_name(self.current) or 'none'}" + (f"  ({previous}{count} release{'s' * (count != 1)})" if r else "")]
        lines.append(f"service   {self.unit}")
        if self.health is not None and not self.state:
            lines.append(f"running   nothing reported ({'; '.join(self.health.get('problems') or ['empty state'])})")
        elif self.health is not None:
            s = self.state
            fps = f", {s['fps']:.1f} fps" if isinstance(s.get("fps"), (int, float)) else ""
            lines.append(f"running   {_name(self.running) or 'nothing yet'}, "
                         f"{'healthy' if self.healthy else 'not healthy'}, {describe_backend(s)}{fps}, "
                         f"{s.get('frames', 0)} frames")
        for name in r.get("incoming") or []:
            lines.append(f"leftover  releases/{name} (an install that did not finish; the next install removes it)")
        lines += [f"problem   {p}" for p in [*r.get("problems", []), *self.problems]]
        verdict = self.verdict()
        lines.append("verdict   " + ("healthy on current" if verdict is None else f"NOT OK: {verdict}"))
        return lines


def query_device(session: Session, options: DeployOptions) -> DeviceStatus:
    """Ask the device: releases, unit state, health. A failed query is a problem, not an error (except a lost connection)."""
    status = DeviceStatus()
    result = session.run(options.edgeclass("bundle", "releases", "--root", options.root, "--json"),
                         "list the releases", check=False, quiet=True)
    try:
        status.releases = json.loads(result.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        status.problems.append(f"could not list the releases: {last_line(result)}")
    if options.reload_command is None:
        result = session.run(f"systemctl is-active {options.quoted_service}", "ask systemd", check=False, quiet=True)
        words = result.stdout.split()
        status.unit = f"{options.service}: {words[0]}" if words else f"{options.service}: unknown ({last_line(result)})"
    else:
        status.unit = f"{options.service}: reloaded by --reload-command"
    result = session.run(options.edgeclass("service", "status", "--json", "--state-file", options.state_file),
                         "read the service's health", check=False, quiet=True)
    try:
        status.health = json.loads(result.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        status.problems.append(f"could not read the service's health: {last_line(result)}")
    return status


def edgetpu_problem(state: dict, bundle_has_edgetpu_model: bool) -> str | None:
    """The Edge TPU was required (``edgetpu = "on"``), the bundle has its model, yet the CPU runs."""
    if bundle_has_edgetpu_model and state.get("edgetpu_setting") == "on" and state.get("backend") == "cpu":
        return ('the bundle has model_edgetpu.tflite and [model] edgetpu = "on", but the service runs '
                f"{state.get('model') or 'the model'} on the CPU (is the Coral plugged in, libedgetpu1-std installed?)")
    return None


def describe_backend(state: dict) -> str:
    """``backend cpu (ai_edge_litert, model.tflite)``, or that the service did not say."""
    backend = state.get("backend")
    if not backend:
        return "backend not reported"
    details = ", ".join(str(state[k]) for k in ("interpreter", "model") if state.get(k))
    return f"backend {backend}" + (f" ({details})" if details else "")


def _name(path: str | None) -> str | None:
    return Path(path).name if path else None
