"""A "Pi" on this machine for the deploy tests: a real sshd, and a unit run by the systemd stand-in.

- :class:`Sshd`: OpenSSH's server started by the test on 127.0.0.1 (a free
  port), with a test-made host key and client key, the host key pinned on
  the client side. ``SetEnv PATH=`` puts the Pi's ``bin/`` first in every
  ssh session, so the deploy's own ``systemctl`` and ``sudo -n systemctl``
  reach the stand-ins (:mod:`.systemd_standin`).
- :class:`FakePi`: the device's directories (releases root, runtime dir with
  the state file, ``device.toml``), the unit ("edgeclass") whose ExecStart is
  the real ``edgeclass run --config device.toml`` on a looping colour video,
  and the device's ``edgeclass`` command.

What is not real: systemd itself (it cannot run as PID 1 here; the stand-in
behaves as documented for the verbs deploy uses), and the service user. The
venv's interpreter on this machine may live under /root, which no other user
can enter, so edgeclass runs as the ssh user; when the tests run as root the
device's ``edgeclass bundle install`` first has every staged file read by
``nobody`` (a real uid switch), which is what the service user needs.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .network_cut import children

STANDIN = Path(__file__).with_name("systemd_standin.py")
NETWORK_CUT = Path(__file__).with_name("network_cut.py")
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
HAVE_SSH = not (SSHD is None or shutil.which("ssh") is None or shutil.which("scp") is None
                or shutil.which("ssh-keygen") is None)
needs_ssh = pytest.mark.skipif(
    not HAVE_SSH,
    reason="OpenSSH server/client not installed (Debian: apt-get install -y --no-install-recommends openssh-server)",
)
SERVICE_USER = "nobody"  # reads the staged bundle when the tests run as root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def login_user() -> str:
    return os.environ.get("USER") or pwd.getpwuid(os.getuid()).pw_name


class Sshd:
    """A throwaway sshd on 127.0.0.1:<port> whose sessions see ``path_first`` first on PATH."""

    def __init__(self, work: Path, path_first: Path | None = None) -> None:
        privsep = Path("/run/sshd")  # compiled-in privilege separation directory of Debian's sshd
        if not privsep.is_dir():
            if os.geteuid() != 0:
                pytest.skip(f"{privsep} is missing and only root can create it; sshd refuses to start without it")
            privsep.mkdir(mode=0o755, parents=True)
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            if not (work / name).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True)
        shutil.copy(work / "client_key.pub", work / "authorized_keys")
        self.port = free_port()
        self.user = login_user()
        path = f"SetEnv PATH={path_first}:/usr/local/bin:/usr/bin:/bin\n" if path_first else ""
        (work / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {work}/host_key
AuthorizedKeysFile {work}/authorized_keys
PidFile {work}/sshd.pid
AllowUsers {self.user}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
{path}""")
        # Pin the host key: the client checks it for real (StrictHostKeyChecking=yes).
        host_pub = (work / "host_key.pub").read_text().split()
        (work / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1"

    @property
    def args(self) -> list[str]:
        """The deploy options that reach this sshd."""
        return ["-p", str(self.port), "-i", str(self.work / "client_key"), "--ssh-config", "none",
                "-o", f"UserKnownHostsFile={self.work}/known_hosts", "-o", "StrictHostKeyChecking=yes"]

    def start(self) -> None:
        log = open(self.work / "sshd.log", "a")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.work / "sshd_config")], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"sshd exited with {self.proc.returncode}: {(self.work / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"sshd did not listen on port {self.port}: {(self.work / 'sshd.log').read_text()}")
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the listener and every connection it serves (its children, by pid): the network is gone."""
        if self.proc is None:
            return
        for pid in children(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None


DEVICE_TOML = """\
# The service's config on the test Pi (same keys as systemd/device.toml).
[model]
bundle = "{bundle}"
threads = 1
edgetpu = "{edgetpu}"

[source]
source = "{video}"
loop = true
realtime = true

[output]
path = "-"
stats_interval = 0

[service]
state_file = "{state}"
state_interval = 0.3
"""


class FakePi:
    """The device side of a deploy, in a short directory under /tmp (AF_UNIX paths are limited to 108 bytes)."""

    def __init__(self, video: Path, remote_edgeclass: str, bin_dir: Path, *, restart_sec: float = 0.2,
                 start_limit_burst: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ecpi-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.root, self.run, self.unit_dir = (self.dir / n for n in ("lib", "run", "unit"))
        for d in (self.root, self.run, self.unit_dir):
            d.mkdir(mode=0o755)
        self.bin = bin_dir  # first on the ssh sessions' PATH (Sshd path_first)
        self.bin.mkdir(mode=0o755, exist_ok=True)
        self.state = self.run / "state.json"
        self.config = self.dir / "device.toml"
        self.journal = self.dir / "journal.log"
        self.video = self.dir / "camera.avi"
        shutil.copyfile(video, self.video)
        self.write_config()
        self.unit = {
            "name": "edgeclass", "user": None, "journal": str(self.journal),
            "exec_start": [sys.executable, "-m", "edgeclass.device.cli", "run", "--config", str(self.config)],
            "exec_reload": None, "restart_sec": restart_sec, "start_limit_burst": start_limit_burst,
            "start_limit_interval": 600, "timeout_start": 30,
        }
        self.save_unit()
        cut = self.dir / "cut-network"
        _script(self.bin / "systemctl", f"""\
if [ -f {cut} ] && [ "$(readlink -f {self.root}/current)" != "$(head -1 {cut})" ]; then
  pid=$(tail -1 {cut}); rm -f {cut}; exec {sys.executable} {NETWORK_CUT} "$pid"
fi
exec {sys.executable} {STANDIN} systemctl {self.unit_dir} "$@"
""")
        _script(self.bin / "sudo", f'exec {sys.executable} {STANDIN} sudo "$@"\n')
        self.remote_edgeclass = remote_edgeclass
        self.edgeclass = str(self.bin / "edgeclass")
        probe = ""
        if os.geteuid() == 0:  # the service user must be able to read the upload (scp keeps a 0700 mode)
            uid = pwd.getpwnam(SERVICE_USER)
            probe = f"""\
if [ "$1" = bundle ] && [ "$2" = install ]; then
  if ! cd / || ! setpriv --reuid={uid.pw_uid} --regid={uid.pw_gid} --clear-groups -- \\
       find "$3" \\( -type d -exec test -x {{}} \\; -o -type f -exec cat {{}} + \\) > /dev/null 2> {self.dir}/probe.err
  then echo "error: $3 is not readable by the service user ({SERVICE_USER}): $(tail -1 {self.dir}/probe.err)" >&2; exit 2
  fi
fi
"""
        record = f'[ "$1" = bundle ] && [ "$2" = install ] && echo "$3" >> {self.dir}/installed-from.log\n'
        _script(self.bin / "edgeclass", f'{record}{probe}exec {remote_edgeclass} "$@"\n')

    def write_config(self, *, bundle: str | None = None, edgetpu: str = "auto", text: str | None = None) -> None:
        self.config.write_text(text if text is not None else DEVICE_TOML.format(
            bundle=bundle or self.root / "current", edgetpu=edgetpu, video=self.video, state=self.state))

    def cut_network_after_install(self, sshd: "Sshd") -> None:
        """The first systemctl call after ``current`` changes drops every connection and stops sshd."""
        (self.dir / "cut-network").write_text(f"{os.path.realpath(self.root / 'current')}\n{sshd.proc.pid}\n")

    def install_and_run(self, *bundles: Path) -> str:
        """Set the Pi up as an admin there would: ``edgeclass bundle install`` each, then start (or reload) the unit
        and wait until the service reports the last one; its resolved release path."""
        for bundle in bundles:
            subprocess.run([self.remote_edgeclass, "bundle", "install", str(bundle), "--root", str(self.root)],
                           check=True, capture_output=True, timeout=120)
        release = self.current()
        assert self.systemctl("reload-or-restart").returncode == 0, self.journal_text()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                state = self.state_json()
            except (FileNotFoundError, json.JSONDecodeError):
                state = {}
            if state.get("bundle_path") == release and (state.get("frames") or 0) > 0:
                return release
            time.sleep(0.1)
        raise AssertionError(f"the service did not report {release}:\n{self.journal_text()}")

    def save_unit(self) -> None:
        (self.unit_dir / "unit.json").write_text(json.dumps(self.unit))

    def systemctl(self, verb: str) -> subprocess.CompletedProcess:
        """The stand-in, run here as an admin on the Pi would."""
        return subprocess.run([str(self.bin / "systemctl"), verb, "edgeclass"], capture_output=True, text=True,
                              timeout=60)

    def unit_state(self) -> dict:
        return json.loads((self.unit_dir / "status.json").read_text())

    def wait_unit(self, state: str, result: str | None = None, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                now = self.unit_state()
            except (FileNotFoundError, json.JSONDecodeError):
                now = {}
            if now.get("state") == state and (result is None or now.get("result") == result):
                return now
            time.sleep(0.1)
        raise AssertionError(f"unit not {state}/{result} after {timeout} s: {now}\n{self.journal_text()}")

    def state_json(self) -> dict:
        return json.loads(self.state.read_text())

    def current(self) -> str:
        return os.path.realpath(self.root / "current")

    def uploads(self) -> list[Path]:
        """The staged copies deploy installed from (their directory must be gone afterwards)."""
        log = self.dir / "installed-from.log"
        return [Path(line) for line in log.read_text().split()] if log.exists() else []

    def journal_text(self) -> str:
        return self.journal.read_text() if self.journal.exists() else ""

    def deploy_args(self, timeout: float = 30) -> list[str]:
        return ["--root", str(self.root), "--state-file", str(self.state), "--remote-edgeclass", self.edgeclass,
                "--as-user", "", "--timeout", str(timeout), "--keep", "3"]

    def close(self) -> None:
        self.systemctl("stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        for name in ("systemctl", "sudo", "edgeclass"):
            (self.bin / name).unlink(missing_ok=True)


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
