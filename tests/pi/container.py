"""A rehearsal Pi: a Debian bookworm container with a real systemd, booted by ``systemd-nspawn``.

The root (built once per machine by ``.ci/pi-root``) stays untouched: every
container runs on an overlay of it with a tmpfs on top (``--volatile=overlay``),
so each one starts from the same bare Debian. The container shares the
host's network, which is how its pip reaches the package registries; its
sshd listens only on a free 127.0.0.1 port, with a throwaway host key the
harness pins in its own known_hosts. Commands go in as root with ``nsenter``
into every namespace of the container's PID 1.

Facts this relies on (systemd 252, no systemd as PID 1 on the host):
``--register=no`` (there is no host D-Bus / machined), ``--keep-unit``, and
``127.0.1.1 <hostname>`` in /etc/hosts (sudo resolves its own host name).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOT_SCRIPT = REPO / ".ci" / "pi-root"
HOSTNAME = "raspberrypi"
PI_USER = "pi"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The host's pip settings (index, certificate, constraints): pip in the container must use the same.
PIP_SETTINGS = (Path("/etc/pip.conf"), Path("/etc/xdg/pip"))


def cannot_run_reason() -> str | None:
    """Why no container can be booted here (None: it can)."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root (run the suite as root, as .ci/run does)"
    for tool, package in (("systemd-nspawn", "systemd-container"), ("nsenter", "util-linux"),
                          ("debootstrap", "debootstrap"), ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian: apt-get install -y {package})"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no /sys/fs/cgroup: systemd cannot boot in a container here"
    return None


def cached_root() -> Path:
    """The bookworm root, built by ``.ci/pi-root`` when this machine has none yet (minutes, once)."""
    result = subprocess.run([str(ROOT_SCRIPT)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{ROOT_SCRIPT} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PiContainer:
    """One booted container; :meth:`boot`, then :meth:`sh` / :meth:`systemctl`, then :meth:`stop`."""

    root: Path
    work: Path  # host-side files: keys, ssh config, console log
    name: str
    port: int = field(default_factory=free_port)
    pip_cache: Path | None = None  # shared between runs on this machine, mounted as root's pip cache
    nspawn: subprocess.Popen | None = None
    leader: int | None = None
    boot_seconds: float | None = None

    # -- boot and stop -------------------------------------------------------------

    def boot(self, timeout: float = 120) -> "PiContainer":
        """Start the container, wait until systemd says it is running, create the ``pi`` user."""
        self.work.mkdir(parents=True, exist_ok=True)
        host_key = self.work / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name, "-f", str(host_key)], check=True)
        sshd_conf = self.work / "sshd-harness.conf"
        sshd_conf.write_text(f"# The container shares the host's network: one loopback port, no port 22.\n"
                             f"Port {self.port}\nListenAddress 127.0.0.1\n"
                             "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n")
        binds = [f"--bind-ro={host_key}:/etc/ssh/ssh_host_ed25519_key",
                 f"--bind-ro={host_key}.pub:/etc/ssh/ssh_host_ed25519_key.pub",
                 f"--bind-ro={sshd_conf}:/etc/ssh/sshd_config.d/harness.conf",
                 f"--bind-ro={CA_BUNDLE}"]
        binds += [f"--bind-ro={p}" for p in PIP_SETTINGS if p.exists()]
        if self.pip_cache is not None:
            self.pip_cache.mkdir(parents=True, exist_ok=True)
            binds.append(f"--bind={self.pip_cache}:/root/.cache/pip")
        argv = ["systemd-nspawn", "-D", str(self.root), "--volatile=overlay", "-b", "--register=no", "--keep-unit",
                "-M", self.name, f"--hostname={HOSTNAME}", "--console=read-only", *binds]
        self.console = self.work / "console.log"
        started = time.monotonic()
        with open(self.console, "wb") as log:
            self.nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        try:
            self.leader = self._wait_leader(started + timeout)
            state = ""  # until systemd's own socket exists, systemctl cannot reach it ("offline" or nothing)
            while state in ("", "offline") and time.monotonic() < started + timeout:
                result = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=timeout)
                state = result.stdout.strip()
                time.sleep(0.1)
            if state not in ("running", "degraded"):
                raise RuntimeError(f"container {self.name} did not boot: {state} {result.stderr.strip()}\n{self.console_tail()}")
            self.boot_seconds = time.monotonic() - started
            self._add_pi_user()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_leader(self, deadline: float) -> int:
        """The container's PID 1 as seen from here: nspawn's child that is PID 1 in its own namespace."""
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.nspawn.returncode}:\n{self.console_tail()}")
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
                except OSError:
                    continue
                if (fields.get("PPid", "").strip() == str(self.nspawn.pid) and fields.get("NSpid", "").split()[-1:] == ["1"]
                        and fields.get("Name", "").strip() == "systemd"):
                    return int(status.parent.name)
            time.sleep(0.1)
        raise RuntimeError(f"container {self.name} did not start in time:\n{self.console_tail()}")

    def _add_pi_user(self) -> None:
        """The Raspberry Pi OS default: user ``pi`` with passwordless sudo; a throwaway key for ssh."""
        key = self.work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"harness@{self.name}", "-f", str(key)],
                       check=True)
        pub = (self.work / "id_ed25519.pub").read_text().strip()
        self.sh(f"useradd --create-home --shell /bin/bash --groups adm,sudo,video,plugdev {PI_USER} && "
                f"echo '{PI_USER} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/010_pi-nopasswd && "
                f"chmod 0440 /etc/sudoers.d/010_pi-nopasswd && "
                f"install -d -m 700 -o {PI_USER} -g {PI_USER} /home/{PI_USER}/.ssh && "
                f"echo {shlex.quote(pub)} > /home/{PI_USER}/.ssh/authorized_keys && "
                f"chown {PI_USER}:{PI_USER} /home/{PI_USER}/.ssh/authorized_keys && "
                f"chmod 600 /home/{PI_USER}/.ssh/authorized_keys")
        host_pub = (self.work / "ssh_host_ed25519_key.pub").read_text().split()
        (self.work / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        # What a user has in ~/.ssh/config for their Pi; the harness's ssh/scp wrappers add -F for it.
        (self.work / "ssh_config").write_text(
            f"Host {self.name}\n  HostName 127.0.0.1\n  Port {self.port}\n  IdentityFile {key}\n"
            f"  IdentitiesOnly yes\n  UserKnownHostsFile {self.work / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
            "  LogLevel ERROR\n")
        bin_dir = self.work / "bin"
        bin_dir.mkdir(exist_ok=True)
        for tool in ("ssh", "scp"):
            wrapper = bin_dir / tool
            wrapper.write_text(f"#!/bin/sh\nexec {shutil.which(tool)} -F {self.work / 'ssh_config'} \"$@\"\n")
            wrapper.chmod(0o755)

    def stop(self, timeout: float = 30) -> None:
        """Shut the container down (SIGTERM: nspawn asks its systemd to power off), then kill what is left."""
        if self.nspawn is None or self.nspawn.poll() is not None:
            return
        self.nspawn.terminate()
        try:
            self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.nspawn.pid, 9)
            self.nspawn.wait(10)

    def console_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console log)"

    # -- commands inside -------------------------------------------------------------

    @property
    def host(self) -> str:
        """The ssh destination a user would type, ``pi@<name>`` (an alias in the harness's ssh config)."""
        return f"{PI_USER}@{self.name}"

    def env(self) -> dict:
        """Environment for a workstation command: the harness's ssh/scp first on PATH, then this venv's edgeclass."""
        return {**os.environ, "PATH": f"{self.work / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def run(self, argv: list[str], *, user: str | None = None, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run argv inside the container (as root, or ``user`` through ``runuser``)."""
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        full = ["nsenter", "-t", str(self.leader), "-a", "--", "env", "-i",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", *argv]
        result = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"in {self.name}: {shlex.join(argv)} exited {result.returncode}\n"
                                 f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}")
        return result

    def root_path(self, path: str) -> Path:
        """A path inside the running container, seen from the host (through its PID 1's root)."""
        return Path(f"/proc/{self.leader}/root") / path.lstrip("/")

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        """One shell command line inside the container."""
        return self.run(["sh", "-c", script], **kwargs)

    def ssh(self, command: str, *, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """``ssh pi@raspberrypi COMMAND`` from the host, the way the README's user types it."""
        result = subprocess.run(["ssh", self.host, command], capture_output=True, text=True, timeout=timeout,
                                env=self.env(), stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {self.host} {command!r} exited {result.returncode}\n"
                                 f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}")
        return result

    def systemctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return self.run(["systemctl", "--no-pager", *args], check=check)

    def unit_property(self, name: str, unit: str = "edgeclass") -> str:
        return self.run(["systemctl", "show", "-P", name, unit]).stdout.strip()

    def active_state(self, unit: str = "edgeclass") -> str:
        return self.unit_property("ActiveState", unit)

    def journal(self, *args: str, unit: str = "edgeclass") -> str:
        """``journalctl -u UNIT ARGS`` inside, after a sync so every line written so far is there."""
        self.run(["journalctl", "--sync"], check=False)
        return self.run(["journalctl", "-u", unit, "--no-pager", "-q", *args], check=False).stdout

    def wait_for(self, what: str, predicate, timeout: float = 60, interval: float = 0.5):
        """Poll ``predicate()`` until it returns something truthy; fail naming ``what`` and the journal."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"in {self.name}: {what} did not happen within {timeout:g} s; "
                                     f"unit {self.active_state()}; journal:\n{self.journal('-n', '60')}")
            time.sleep(interval)
