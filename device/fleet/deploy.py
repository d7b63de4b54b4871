"""``edgeclass deploy``: ship a bundle to a Pi over OpenSSH, switch to it, roll back if it is not healthy.

Everything on the device is done by the device's own ``edgeclass`` (``bundle
install``, ``service status --json``, ``bundle rollback``), so this module only
strings commands together:

1. check the bundle here (hashes) so a damaged one never leaves the workstation;
2. ``mktemp -d`` on the host, ``scp -r`` the bundle into it;
3. ``edgeclass bundle install`` there: copy into releases/, verify (hashes and a
   test inference), switch ``current`` atomically;
4. reload the service (``sudo systemctl reload edgeclass``: SIGHUP, hot reload);
5. poll ``edgeclass service status --json`` until the service reports healthy
   *on the new release*; otherwise ``edgeclass bundle rollback`` and reload again.

``ssh`` and ``scp`` are the user's own, so ~/.ssh/config, agents and keys all
apply; ``BatchMode=yes`` makes a missing key fail instead of prompting
forever (the user's ``-o`` options come first, and ssh keeps the first value).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..errors import EdgeclassError

log = logging.getLogger(__name__)


class DeployError(EdgeclassError):
    """The bundle could not be deployed (and was rolled back when it got that far)."""


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

    def ssh(self, command: str) -> list[str]:
        """argv running ``command`` (one shell string) on the host."""
        return ["ssh", *(["-p", str(self.port)] if self.port else []), *self._common(), self.host, command]

    def scp(self, local: Path, remote_dir: str) -> list[str]:
        """argv copying the directory ``local`` into ``remote_dir`` on the host."""
        return ["scp", "-r", "-q", *(["-P", str(self.port)] if self.port else []), *self._common(),
                str(local), f"{self.host}:{remote_dir}/"]


@dataclass(frozen=True)
class DeployOptions:
    """What to run on the device."""

    service: str = "edgeclass"
    root: str = "/var/lib/edgeclass"
    keep: int = 3
    remote_edgeclass: str = "/opt/edgeclass/venv/bin/edgeclass"
    as_user: str = "edgeclass"  # releases belong to the service user; "" = the ssh user
    reload_command: str | None = None  # default: sudo -n systemctl reload <service>
    state_file: str = "/run/edgeclass/state.json"
    timeout: float = 60.0  # seconds to wait for a healthy report
    poll: float = 1.0

    @property
    def reload(self) -> str:
        return self.reload_command or f"sudo -n systemctl reload {shlex.quote(self.service)}"

    def edgeclass(self, *args: str, as_service_user: bool = False) -> str:
        argv = [self.remote_edgeclass, *args]
        if as_service_user and self.as_user:
            argv = ["sudo", "-n", "-u", self.as_user, *argv]
        return shlex.join(argv)


@dataclass
class Deployment:
    """One deploy run: call :meth:`run`; ``dry_run`` prints the commands instead."""

    bundle: Path
    target: SshTarget
    options: DeployOptions = field(default_factory=DeployOptions)
    echo: Callable[[str], None] = print
    dry_run: bool = False

    def run(self) -> dict:
        """Deploy; return ``{"release", "previous", "status"}``; raise :class:`DeployError` after a rollback."""
        from ..bundle import load_bundle

        b = load_bundle(self.bundle)
        opts = self.options
        self.echo(f"deploy {b.name} ({b.path}) to {self.target.host}:{opts.root}")
        if self.dry_run:
            return self._plan(b.path)
        control = self._start_multiplexing()
        try:
            return self._deploy(b)
        finally:
            self._stop_multiplexing(control)

    def _start_multiplexing(self) -> Path | None:
        """Share one authenticated connection between the ~8 ssh/scp calls (one key prompt, much faster).

        The master is started on its own with ``-M -N -f`` and output to a
        file: a master spawned by a captured call would inherit its pipes and
        keep that call from ever returning. If it cannot start, each call
        connects on its own (and reports the real error).
        """
        control = Path(tempfile.mkdtemp(prefix="ec-ssh-"))
        path = control / "%C"  # a hash of host, port and user; unix socket paths are limited to ~104 bytes
        if len(str(path)) + 40 > 100:
            shutil.rmtree(control, ignore_errors=True)
            return None
        master = replace(self.target, options=self.target.options + (f"ControlPath={path}", "ControlPersist=300"))
        argv = master.ssh("")[:-2] + ["-M", "-N", "-f", self.target.host]
        with open(control / "master.log", "w+") as err:
            try:
                code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=60).returncode
            except (OSError, subprocess.TimeoutExpired):
                code = -1
        if code != 0:
            shutil.rmtree(control, ignore_errors=True)
            return None
        # Ours come after the user's -o options (ssh keeps the first value given).
        self.target = replace(self.target, options=self.target.options + ("ControlMaster=no", f"ControlPath={path}"))
        return control

    def _stop_multiplexing(self, control: Path | None) -> None:
        if control is None:
            return
        subprocess.run(self.target.ssh("")[:-2] + ["-O", "exit", self.target.host], capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
        shutil.rmtree(control, ignore_errors=True)

    def _deploy(self, b) -> dict:
        opts = self.options
        tmp = self._ssh("d=$(mktemp -d /tmp/edgeclass-deploy.XXXXXX) && chmod 755 \"$d\" && echo \"$d\"",
                        "create a temporary directory").strip().splitlines()[-1]
        try:
            self._call(self.target.scp(b.path, tmp), f"copy {b.path} to {self.target.host}:{tmp}")
            staged = f"{tmp}/{b.path.name}"
            installed = self._json(self._ssh(
                opts.edgeclass("bundle", "install", staged, "--root", opts.root, "--keep", str(opts.keep), "--json",
                               as_service_user=True),
                "install and verify the bundle"))
        finally:
            self._ssh(shlex.join(["rm", "-rf", tmp]), "remove the temporary directory", check=False)
        release, previous = installed["release"], installed.get("previous")
        self.echo(f"installed {release}" + (f" (previous: {previous})" if previous else " (first release)"))
        problem = self._reload_and_wait(release)
        if problem is None:
            self.echo(f"healthy on {release}")
            return {"release": release, "previous": previous, "status": "healthy"}
        if previous is None:
            raise DeployError(f"{self.target.host}: {release} is not healthy ({problem}) and there is no previous release to roll back to")
        self.echo(f"not healthy ({problem}): rolling back to {previous}")
        self._ssh(opts.edgeclass("bundle", "rollback", "--root", opts.root, "--json", as_service_user=True), "roll back")
        after = self._reload_and_wait(previous)
        verdict = "healthy again" if after is None else f"still not healthy: {after}"
        raise DeployError(f"{self.target.host}: {Path(release).name} did not become healthy ({problem}); "
                          f"rolled back to {Path(previous).name}, {verdict}")

    def _reload_and_wait(self, release: str) -> str | None:
        """Reload, then poll status until healthy on ``release``; the last problem, or None when healthy."""
        opts = self.options
        result = self._call(self.target.ssh(opts.reload), f"reload ({opts.reload})", check=False)
        if result.returncode != 0:
            return f"reload failed with exit {result.returncode}: {_last_line(result)}"
        deadline = time.monotonic() + opts.timeout
        problem = "no status yet"
        status_cmd = opts.edgeclass("service", "status", "--json", "--state-file", opts.state_file)
        while True:
            result = self._call(self.target.ssh(status_cmd), "status", check=False, quiet=True)
            try:
                status = json.loads(result.stdout.strip().splitlines()[-1])
            except (json.JSONDecodeError, IndexError):
                problem = f"status command failed: {_last_line(result)}"
            else:
                running = os.path.normpath(str((status.get("state") or {}).get("bundle_path") or ""))
                if not status.get("healthy"):
                    problem = "; ".join(status.get("problems") or ["unhealthy"])
                elif running != os.path.normpath(release):
                    problem = f"the service still runs {running or 'an unknown bundle'}"
                else:
                    return None
            if time.monotonic() >= deadline:
                return f"{problem}, after {opts.timeout:g} s"
            time.sleep(opts.poll)

    def _plan(self, bundle: Path) -> dict:
        opts, t = self.options, self.target
        tmp = "/tmp/edgeclass-deploy.XXXXXX"
        staged = f"{tmp}/{bundle.name}"
        steps = [
            ("create a temporary directory", t.ssh(f"mktemp -d {tmp}")),
            ("copy the bundle", t.scp(bundle, tmp)),
            ("install and verify it, switch current", t.ssh(opts.edgeclass(
                "bundle", "install", staged, "--root", opts.root, "--keep", str(opts.keep), "--json", as_service_user=True))),
            ("remove the temporary directory", t.ssh(shlex.join(["rm", "-rf", tmp]))),
            ("reload the service", t.ssh(opts.reload)),
            (f"wait up to {opts.timeout:g} s for healthy on the new release", t.ssh(opts.edgeclass(
                "service", "status", "--json", "--state-file", opts.state_file))),
            ("if not healthy: roll back, then reload again", t.ssh(opts.edgeclass(
                "bundle", "rollback", "--root", opts.root, "--json", as_service_user=True))),
        ]
        for text, argv in steps:
            self.echo(f"would: {text}: {shlex.join(argv)}")
        return {"release": None, "previous": None, "status": "dry-run"}

    def _ssh(self, command: str, what: str, check: bool = True) -> str:
        return self._call(self.target.ssh(command), what, check=check).stdout

    def _call(self, argv: list[str], what: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
        if not quiet:
            log.debug("%s: %s", what, shlex.join(argv))
        try:
            result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
        except FileNotFoundError:
            raise DeployError(f"{argv[0]}: not found; install the OpenSSH client (apt install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise DeployError(f"{self.target.host}: '{what}' took more than 600 s") from None
        if check and result.returncode != 0:
            raise DeployError(f"{self.target.host}: could not {what} (exit {result.returncode}): {_last_line(result)}")
        return result

    @staticmethod
    def _json(text: str) -> dict:
        try:
            return json.loads(text.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            raise DeployError(f"expected JSON from the device's edgeclass, got {text.strip()[-200:]!r}") from None


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else "no output"
