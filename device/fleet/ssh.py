"""Running commands on a device with the user's own OpenSSH client: argv building and one shared connection.

``ssh`` and ``scp`` are the user's own, so ~/.ssh/config, agents and keys all
apply; ``BatchMode=yes`` makes a missing key fail instead of prompting
forever (the user's ``-o`` options come first, and ssh keeps the first value).
Every argv ends its options with ``--`` before the host (and scp's
operands), so a host or path that starts with ``-`` (``-oProxyCommand=...``)
is never read as an option.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from ..errors import EdgeclassError

log = logging.getLogger(__name__)

SSH_FAILED = 255  # ssh's own exit status when the connection could not be made or was lost
CALL_TIMEOUT = 600.0


class DeployError(EdgeclassError):
    """The bundle could not be deployed (and was rolled back when it got that far)."""


class ConnectionLost(DeployError):
    """ssh or scp exited 255: the host could not be reached, or the connection dropped."""

    def __init__(self, host: str, what: str, reason: str) -> None:
        super().__init__(f"{host}: could not {what}: ssh failed ({reason})")
        self.what, self.reason = what, reason


@dataclass(frozen=True)
class SshTarget:
    """Where to deploy and how to reach it: ``[user@]host`` plus ssh options."""

    host: str
    port: int | None = None
    identity: Path | None = None
    options: tuple[str, ...] = ()  # extra "-o Key=Value" values, before ours
    config: str | None = None  # ssh -F (default: the user's ~/.ssh/config)

    def _common(self) -> list[str]:
        args: list[str] = []
        if self.config:
            args += ["-F", self.config]
        if self.identity:
            args += ["-i", str(self.identity)]
        for option in self.options:
            args += ["-o", option]
        return args + ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]

    def ssh_argv(self, *flags: str) -> list[str]:
        """``ssh [options] FLAGS -- host``: add the remote command, if any, after it."""
        return ["ssh", *(["-p", str(self.port)] if self.port else []), *self._common(), *flags, "--", self.host]

    def ssh(self, command: str) -> list[str]:
        """argv running ``command`` (one shell string) on the host."""
        return [*self.ssh_argv(), command]

    def scp(self, local: Path, remote_dir: str) -> list[str]:
        """argv copying the directory ``local`` into ``remote_dir`` on the host."""
        return ["scp", "-r", "-q", *(["-P", str(self.port)] if self.port else []), *self._common(),
                "--", str(local), f"{self.host}:{remote_dir}/"]


class Session:
    """Commands on one host over one shared ssh connection; use as a context manager.

    The ~10 ssh calls of a deploy share one authenticated connection (one key
    prompt, much faster). The master is started on its own with ``-M -N -f``
    and output to a file: a master spawned by a captured call would inherit
    its pipes and keep that call from ever returning. If it cannot start,
    each call connects on its own (and reports the real error).
    """

    def __init__(self, target: SshTarget, *, share: bool = True) -> None:
        self.target = target
        self._share = share
        self._control: Path | None = None

    def __enter__(self) -> "Session":
        if self._share:
            self._control = self._start_master()
        return self

    def __exit__(self, *exc) -> None:
        if self._control is None:
            return
        try:
            subprocess.run(self.target.ssh_argv("-O", "exit"), capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self._control, ignore_errors=True)
        self._control = None

    def _start_master(self) -> Path | None:
        control = Path(tempfile.mkdtemp(prefix="ec-ssh-"))
        path = control / "%C"  # a hash of host, port and user; unix socket paths are limited to ~104 bytes
        if len(str(path)) + 40 > 100:
            shutil.rmtree(control, ignore_errors=True)
            return None
        master = replace(self.target, options=self.target.options + (f"ControlPath={path}", "ControlPersist=300"))
        with open(control / "master.log", "w+") as err:
            try:
                code = subprocess.run(master.ssh_argv("-M", "-N", "-f"), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=err, timeout=60).returncode
            except (OSError, subprocess.TimeoutExpired):
                code = -1
        if code != 0:
            shutil.rmtree(control, ignore_errors=True)
            return None
        # Ours come after the user's -o options (ssh keeps the first value given).
        self.target = replace(self.target, options=self.target.options + ("ControlMaster=no", f"ControlPath={path}"))
        return control

    def run(self, command: str, what: str, *, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
        """Run one shell command on the host; :class:`DeployError` (``check``) or :class:`ConnectionLost`."""
        return self.call(self.target.ssh(command), what, check=check, quiet=quiet)

    def copy(self, local: Path, remote_dir: str, what: str) -> None:
        """``scp -r local host:remote_dir/``."""
        self.call(self.target.scp(local, remote_dir), what)

    def call(self, argv: list[str], what: str, *, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
        if not quiet:
            log.debug("%s: %s", what, shlex.join(argv))
        try:
            result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=CALL_TIMEOUT)
        except FileNotFoundError:
            raise DeployError(f"{argv[0]}: not found; install the OpenSSH client (apt install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise DeployError(f"{self.target.host}: '{what}' took more than {CALL_TIMEOUT:g} s") from None
        if result.returncode == SSH_FAILED:
            raise ConnectionLost(self.target.host, what, last_line(result))
        if check and result.returncode != 0:
            raise DeployError(f"{self.target.host}: could not {what} (exit {result.returncode}): {last_line(result)}")
        return result


def last_line(result: subprocess.CompletedProcess) -> str:
    """The last line of stderr (else stdout): where ssh and edgeclass put the reason."""
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else "no output"


def check_host(host: str) -> str:
    """Refuse a host that ssh could only read as an option (it starts with ``-``) or that is empty."""
    if not host or host.startswith("-") or any(c.isspace() for c in host):
        raise DeployError(f"host {host!r}: expected [user@]host as you would give it to ssh "
                          "(a name without spaces that does not start with '-')")
    return host

