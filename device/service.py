"""Installing the systemd service on a Pi, and judging its health from the state file.

``edgeclass service install`` is a plan of small steps computed from what is
already there (so running it twice changes nothing the second time), printed
one line per step, and executed unless ``--dry-run``. ``--prefix`` writes the
files under another root (an SD card mounted on a workstation, or a test's
temporary directory); the user and systemctl steps only run for ``/``.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from .errors import EdgeclassError

log = logging.getLogger(__name__)

UNIT_NAME = "edgeclass.service"
UNIT_DIR = Path("etc/systemd/system")
CONFIG_PATH = Path("etc/edgeclass/device.toml")
STATE_DIR = Path("var/lib/edgeclass")
DEFAULT_EXEC = "/opt/edgeclass/venv/bin/edgeclass"
DEFAULT_USER = "edgeclass"
DEVICE_GROUPS = ("video", "plugdev")  # cameras; the Coral USB udev rule


def packaged_file(name: str) -> str:
    """The unit or default config shipped inside the package (the same files as systemd/)."""
    return resources.files("edgeclass.device").joinpath("data", name).read_text(encoding="utf-8")


def render_unit(user: str = DEFAULT_USER, exec_path: str = DEFAULT_EXEC) -> str:
    """The unit text for ``user`` running ``exec_path``."""
    lines = []
    for line in packaged_file(UNIT_NAME).splitlines(keepends=True):
        if line.startswith(("User=", "Group=")):
            line = f"{line.split('=', 1)[0]}={user}\n"
        elif line.startswith("ExecStart="):
            line = line.replace(DEFAULT_EXEC, exec_path, 1)
        lines.append(line)
    return "".join(lines)


# ---------------------------------------------------------------- install plan


@dataclass(frozen=True)
class Step:
    """One install action: ``text`` is printed; ``action`` (None = nothing to do) performs it."""

    text: str
    action: Callable[[], None] | None = None


def plan_install(prefix: str | Path = "/", user: str = DEFAULT_USER, exec_path: str = DEFAULT_EXEC) -> list[Step]:
    """The steps that bring ``prefix`` to an installed service, given what is there now."""
    prefix = Path(prefix)
    system = prefix.resolve() == Path("/")
    steps: list[Step] = []

    if system:
        steps += _user_steps(user)
    else:
        steps.append(Step(f"skip: create system user {user!r} and add it to {', '.join(DEVICE_GROUPS)} (only with --prefix /)"))

    if not (prefix / exec_path.lstrip("/")).exists():
        steps.append(Step(f"note: {exec_path} does not exist yet; install edgeclass there "
                          f"(python3 -m venv --system-site-packages /opt/edgeclass/venv) or pass --exec"))
    if exec_path.startswith("/home/"):
        steps.append(Step(f"note: {exec_path} is under /home, which the unit hides (ProtectHome=yes); use /opt/edgeclass/venv"))

    state_dir = prefix / STATE_DIR
    for directory, owned in ((prefix / CONFIG_PATH.parent, False), (state_dir, True), (state_dir / "releases", True)):
        if not directory.is_dir():
            steps.append(Step(f"mkdir {directory}", _mkdir(directory)))
        if owned and system:
            steps.append(_chown_step(directory, user))

    unit = prefix / UNIT_DIR / UNIT_NAME
    text = render_unit(user, exec_path)
    unit_changed = not unit.is_file() or unit.read_text(encoding="utf-8") != text
    if unit_changed:
        verb = "update" if unit.exists() else "write"
        steps.append(Step(f"{verb} {unit} (User={user}, ExecStart={exec_path} run --config /{CONFIG_PATH})", _write(unit, text)))
    else:
        steps.append(Step(f"unchanged: {unit}"))

    config = prefix / CONFIG_PATH
    if config.exists():
        steps.append(Step(f"keep: {config} (exists; never overwritten)"))
    else:
        steps.append(Step(f"write {config} (commented defaults)", _write(config, packaged_file("device.toml"))))

    if system:
        if unit_changed:
            steps.append(_run(["systemctl", "daemon-reload"]))
        steps.append(_run(["systemctl", "enable", UNIT_NAME]))
    else:
        steps.append(Step(f"skip: systemctl daemon-reload, systemctl enable {UNIT_NAME} (only with --prefix /)"))
    steps.append(Step(f"next: put a bundle in /{STATE_DIR}/current (edgeclass deploy BUNDLE HOST, or "
                      f"sudo -u {user} edgeclass bundle install BUNDLE --root /{STATE_DIR}), then "
                      f"sudo systemctl start edgeclass"))
    return steps


def run_plan(steps: list[Step], dry_run: bool, echo: Callable[[str], None]) -> None:
    """Print every step; perform those with an action unless ``dry_run``."""
    for step in steps:
        if step.action is None:
            echo(step.text)
            continue
        echo(("would: " if dry_run else "") + step.text)
        if not dry_run:
            step.action()


def _user_steps(user: str) -> list[Step]:
    groups = [g for g in DEVICE_GROUPS if _group_exists(g)]
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return [_run(["useradd", "--system", "--user-group", "--home-dir", f"/{STATE_DIR}", "--no-create-home",
                      "--shell", "/usr/sbin/nologin", "--comment", "edgeclass camera classifier",
                      *(["--groups", ",".join(groups)] if groups else []), user])]
    member_of = {g.gr_name for g in grp.getgrall() if user in g.gr_mem} | {grp.getgrgid(entry.pw_gid).gr_name}
    missing = [g for g in groups if g not in member_of]
    if missing:
        return [_run(["usermod", "--append", "--groups", ",".join(missing), user])]
    return [Step(f"unchanged: user {user!r} exists and is in {', '.join(groups)}")]


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _chown_step(directory: Path, user: str) -> Step:
    try:
        entry = pwd.getpwnam(user)
        stat = directory.stat()
        if (stat.st_uid, stat.st_gid) == (entry.pw_uid, entry.pw_gid):
            return Step(f"unchanged: {directory} owned by {user}")
    except (KeyError, FileNotFoundError):
        pass  # the user or directory is created by an earlier step
    return Step(f"chown {user}:{user} {directory}", lambda: _chown(directory, user))


def _chown(directory: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(directory, entry.pw_uid, entry.pw_gid)


def _mkdir(directory: Path) -> Callable[[], None]:
    return lambda: directory.mkdir(parents=True, exist_ok=True)


def _write(path: Path, text: str) -> Callable[[], None]:
    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return write


def _run(argv: list[str]) -> Step:
    def run() -> None:
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EdgeclassError(f"{argv[0]}: '{' '.join(argv)}' failed with exit {result.returncode}"
                                 + (f": {detail[-1]}" if detail else ""))
    return Step("run: " + " ".join(argv), run)


# ---------------------------------------------------------------- health


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
        if s.get("bundle_name") or s.get("bundle_path"):
            lines.append(f"  bundle {s.get('bundle_name', '?')} ({s.get('bundle_path', '?')})")
        fps = s.get("fps")
        lines.append(f"  {fps:.1f} fps, " if isinstance(fps, (int, float)) else "  ")
        lines[-1] += f"{s.get('frames', 0)} frames, label {s.get('label')}"
        lines.append(f"  last error: {s.get('last_error') or 'none'}")
        known = {"pid", "started_at", "updated_at", "fps", "frames", "label", "last_error", "bundle_name", "bundle_path"}
        lines += [f"  {k}: {v}" for k, v in s.items() if k not in known]
    return "\n".join(lines)


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
