"""Installing the systemd service on a Pi: ``edgeclass service install``.

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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from ..errors import EdgeclassError
from ..files import atomic_write

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
    return resources.files("edgeclass.device.service").joinpath("data", name).read_text(encoding="utf-8")


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


def default_operator(environ=None) -> str | None:
    """The person installing: the user who ran ``sudo edgeclass service install`` (``$SUDO_USER``), not root."""
    env = os.environ if environ is None else environ
    name = env.get("SUDO_USER")
    return name if name and name != "root" else None


def plan_install(prefix: str | Path = "/", user: str = DEFAULT_USER, exec_path: str = DEFAULT_EXEC,
                 operator: str | None = None) -> list[Step]:
    """The steps that bring ``prefix`` to an installed service, given what is there now.

    ``operator``: a login user to add to the service's group, so they can read
    the saved uncertain frames and results without sudo (None = nobody).
    """
    prefix = Path(prefix)
    system = prefix.resolve() == Path("/")
    steps: list[Step] = []

    if system:
        steps += _user_steps(user)
        if operator:
            steps += _operator_steps(operator, user)
    else:
        steps.append(Step(f"skip: create system user {user!r} and add it to {', '.join(DEVICE_GROUPS)} (only with --prefix /)"))
        if operator:
            steps.append(Step(f"skip: add {operator!r} to group {user!r} (only with --prefix /)"))

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
    steps.append(Step(f"next: sudo systemctl start edgeclass (it waits for a first bundle), then from the "
                      f"workstation edgeclass deploy BUNDLE HOST (or here: sudo -u {user} edgeclass bundle install "
                      f"BUNDLE --root /{STATE_DIR})"))
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


def _operator_steps(operator: str, user: str) -> list[Step]:
    """Add the person who sorts saved frames to the service's group (its name is the service user's)."""
    try:
        entry = pwd.getpwnam(operator)
    except KeyError:
        raise EdgeclassError(f"--operator {operator}: no such user on this system "
                             "(the login that sorts saved frames; '' for nobody)") from None
    try:
        group = grp.getgrnam(user)
        member = operator in group.gr_mem or entry.pw_gid == group.gr_gid
    except KeyError:
        member = False  # created with the service user by an earlier step
    where = "/var/lib/edgeclass/uncertain and /var/log/edgeclass"
    if member:
        return [Step(f"unchanged: {operator!r} is in group {user!r} (reads {where} without sudo)")]
    return [_run(["usermod", "--append", "--groups", user, operator]),
            Step(f"note: {operator} reads {where} without sudo from their next login (or run: newgrp {user})")]


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
        atomic_write(path, text)
    return write


def _run(argv: list[str]) -> Step:
    def run() -> None:
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EdgeclassError(f"{argv[0]}: '{' '.join(argv)}' failed with exit {result.returncode}"
                                 + (f": {detail[-1]}" if detail else ""))
    return Step("run: " + " ".join(argv), run)
