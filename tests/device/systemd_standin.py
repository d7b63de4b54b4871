"""Stand-ins for ``systemctl`` and ``sudo`` on the test's "Pi", for the deploy tests over a real sshd.

systemd cannot run as PID 1 in this test environment, so this script plays
the part of one unit, the way systemd handles it (the behaviour the deploy
must cope with, as documented in systemctl(1) and systemd.service(5)):

- ``start`` runs ExecStart (a real ``edgeclass run --config ...`` process,
  as the unit's ``User=`` with ``UMask=0027``) under a small manager process
  that listens on ``NOTIFY_SOCKET``; like ``Type=notify`` it returns once the
  service sent ``READY=1``, and fails when the process exits first;
- ``Restart=on-failure`` with ``RestartSec=`` and a start limit: a crash loop
  ends ``failed`` with result ``start-limit-hit``, and then ``start`` is
  refused until ``reset-failed``;
- ``reload`` on a unit that is not active fails ("is not active, cannot
  reload."); on an active one it runs ExecReload (default ``kill -HUP
  $MAINPID``) and fails when that exits non-zero;
- ``reload-or-restart`` reloads an active unit and starts any other;
- ``is-active`` prints the state and exits 0 only when active (or reloading).

The unit is described by ``UNITDIR/unit.json``; its state is
``UNITDIR/status.json``. ``sudo [-n] [-u USER] CMD...`` runs CMD as USER
(a real uid/gid switch; only root can) with the same PATH, so ``sudo -n
systemctl`` reaches this stand-in too.

Usage: ``systemd_standin.py systemctl UNITDIR VERB [UNIT]``,
``systemd_standin.py sudo [-n] [-u USER] CMD...``,
``systemd_standin.py manage UNITDIR`` (internal).
"""

from __future__ import annotations

import collections
import fcntl
import json
import os
import pwd
import socket
import subprocess
import sys
import time
from pathlib import Path

ACTIVE = ("active", "reloading")


def read_status(unit_dir: Path) -> dict:
    try:
        return json.loads((unit_dir / "status.json").read_text())
    except FileNotFoundError:
        return {"state": "inactive", "result": "success", "main_pid": None, "manager_pid": None}


def write_status(unit_dir: Path, **changes) -> None:
    """Read-modify-write under a lock: the manager and systemctl calls both update it."""
    with open(unit_dir / "status.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        status = {**read_status(unit_dir), **changes}
        tmp = unit_dir / f".status.{os.getpid()}"
        tmp.write_text(json.dumps(status))
        os.replace(tmp, unit_dir / "status.json")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _journal(unit_dir: Path, unit: dict, line: str) -> None:
    with open(unit["journal"], "a") as fh:
        fh.write(f"standin-systemd: {line}\n")


# ---------------------------------------------------------------- the manager


def manage(unit_dir: Path) -> int:
    """Run ExecStart, restart it on failure until the start limit, track READY/RELOADING/STOPPING."""
    unit = json.loads((unit_dir / "unit.json").read_text())
    notify = unit_dir / "notify"
    notify.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    os.chmod(notify, 0o666)  # the service user must be able to send
    sock.settimeout(0.1)
    starts: collections.deque[float] = collections.deque()
    user = pwd.getpwnam(unit["user"]) if unit.get("user") else None
    while True:
        now = time.monotonic()
        while starts and now - starts[0] > unit["start_limit_interval"]:
            starts.popleft()
        if len(starts) >= unit["start_limit_burst"]:
            _journal(unit_dir, unit, "Start request repeated too quickly.")
            write_status(unit_dir, state="failed", result="start-limit-hit", main_pid=None, manager_pid=None)
            return 1
        starts.append(now)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "NOTIFY_SOCKET": str(notify), "PYTHONUNBUFFERED": "1",
               "LANG": "C.UTF-8"}

        def become_user() -> None:  # User=, Group=, no supplementary groups
            if user is not None:
                os.setgroups([])
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        with open(unit["journal"], "a") as log:
            child = subprocess.Popen(unit["exec_start"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                     cwd="/", umask=0o027, preexec_fn=become_user)
        write_status(unit_dir, state="activating", result="success", main_pid=child.pid, manager_pid=os.getpid())
        deadline = time.monotonic() + unit["timeout_start"]
        ready = False
        while True:
            try:
                message = sock.recv(65536).decode()
            except socket.timeout:
                message = ""
            for line in message.split("\n"):
                if line == "READY=1":
                    ready = True
                    write_status(unit_dir, state="active")
                elif line == "RELOADING=1":
                    write_status(unit_dir, state="reloading")
                elif line == "STOPPING=1":
                    write_status(unit_dir, state="deactivating")
            if (unit_dir / "stop").exists():
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                (unit_dir / "stop").unlink()
                write_status(unit_dir, state="inactive", result="success", main_pid=None, manager_pid=None)
                return 0
            code = child.poll()
            if code is not None:
                break
            if not ready and time.monotonic() > deadline:
                _journal(unit_dir, unit, "start operation timed out. Terminating.")
                child.kill()
                code = child.wait()
                break
        _journal(unit_dir, unit, f"Main process exited, status={code}")
        if code == 0:
            write_status(unit_dir, state="inactive", result="success", main_pid=None, manager_pid=None)
            return 0
        # Restart=on-failure: "activating (auto-restart)" until RestartSec has passed.
        write_status(unit_dir, state="activating", result="exit-code", main_pid=None,
                     failures=read_status(unit_dir).get("failures", 0) + 1)
        time.sleep(unit["restart_sec"])


# ---------------------------------------------------------------- systemctl


def systemctl(unit_dir: Path, verb: str) -> int:
    unit = json.loads((unit_dir / "unit.json").read_text())
    name = f"{unit['name']}.service"
    status = read_status(unit_dir)
    if status["state"] not in ("inactive", "failed") and not _alive(status.get("manager_pid")):
        write_status(unit_dir, state="failed", result="exit-code", main_pid=None, manager_pid=None)  # manager killed
        status = read_status(unit_dir)
    state = status["state"]
    if verb == "is-active":
        print(state)
        return 0 if state in ACTIVE else 3
    if verb == "is-failed":
        print(state)
        return 0 if state == "failed" else 1
    if verb == "reset-failed":
        if state == "failed":
            write_status(unit_dir, state="inactive", result="success")
        return 0
    if verb == "start":
        return _start(unit_dir, unit, name, status)
    if verb == "stop":
        return _stop(unit_dir, status)
    if verb == "restart":
        _stop(unit_dir, status)
        return _start(unit_dir, unit, name, read_status(unit_dir))
    if verb == "reload":
        return _reload(unit_dir, unit, name, status)
    if verb in ("reload-or-restart", "try-reload-or-restart"):
        if state in ACTIVE:
            return _reload(unit_dir, unit, name, status)
        if verb == "try-reload-or-restart":
            return 0
        return _start(unit_dir, unit, name, status)
    print(f"systemctl stand-in: unknown verb {verb!r}", file=sys.stderr)
    return 1


def _start(unit_dir: Path, unit: dict, name: str, status: dict) -> int:
    if status["state"] in ACTIVE:
        return 0
    if status["state"] == "failed" and status.get("result") == "start-limit-hit":
        print(f"Job for {name} failed because the start limit was hit.\n"
              f"See \"systemctl status {name}\" and \"journalctl -xeu {name}\" for details.", file=sys.stderr)
        return 1
    if status["state"] != "activating" or not _alive(status.get("manager_pid")):
        status = read_status(unit_dir)
        with open(unit["journal"], "a") as log:
            manager = subprocess.Popen([sys.executable, __file__, "manage", str(unit_dir)], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=log, start_new_session=True, close_fds=True)
        write_status(unit_dir, state="activating", result="success", manager_pid=manager.pid)
    failures = status.get("failures", 0)
    deadline = time.monotonic() + unit["timeout_start"] + 5
    while time.monotonic() < deadline:
        now = read_status(unit_dir)
        if now["state"] in ACTIVE:
            return 0
        if now["state"] in ("failed", "inactive") or now.get("failures", 0) > failures:
            print(f"Job for {name} failed because the control process exited with error code.\n"
                  f"See \"systemctl status {name}\" and \"journalctl -xeu {name}\" for details.", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(f"Job for {name} timed out.", file=sys.stderr)
    return 1


def _stop(unit_dir: Path, status: dict) -> int:
    manager = status.get("manager_pid")
    if not _alive(manager):
        if status["state"] != "failed":
            write_status(unit_dir, state="inactive", main_pid=None, manager_pid=None)
        return 0
    (unit_dir / "stop").touch()
    deadline = time.monotonic() + 20
    while _alive(manager) and time.monotonic() < deadline:
        try:  # reap it when it is our child (the test's own teardown)
            os.waitpid(manager, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return 0


def _reload(unit_dir: Path, unit: dict, name: str, status: dict) -> int:
    if status["state"] not in ACTIVE:
        print(f"{name} is not active, cannot reload.", file=sys.stderr)
        return 1
    pid = status["main_pid"]
    command = unit.get("exec_reload") or "/bin/kill -HUP $MAINPID"
    code = subprocess.run(["/bin/sh", "-c", command], env={**os.environ, "MAINPID": str(pid)}).returncode
    if code != 0:
        print(f"Job for {name} failed because the control process exited with error code.\n"
              f"See \"systemctl status {name}\" and \"journalctl -xeu {name}\" for details.", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- sudo


def sudo(args: list[str]) -> int:
    """``sudo [-n] [-u USER] CMD...``: exec CMD as USER (default root)."""
    user = "root"
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag == "-u":
            user = args.pop(0)
        elif flag == "--":
            break
        elif flag != "-n":
            print(f"sudo stand-in: unsupported option {flag}", file=sys.stderr)
            return 1
    entry = pwd.getpwnam(user)
    if entry.pw_uid != os.getuid():
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    os.execvp(args[0], args)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "manage":
        sys.exit(manage(Path(sys.argv[2])))
    if mode == "systemctl":
        sys.exit(systemctl(Path(sys.argv[2]), sys.argv[3]))
    if mode == "sudo":
        sys.exit(sudo(sys.argv[2:]))
    sys.exit(f"unknown mode {mode}")
