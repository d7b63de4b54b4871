"""What ``deploy`` runs on the device, and where: the one place its remote commands are spelled."""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class DeployOptions:
    """The device's names and paths, and how long to wait for it."""

    service: str = "edgeclass"
    root: str = "/var/lib/edgeclass"
    keep: int = 3
    remote_edgeclass: str = "/opt/edgeclass/venv/bin/edgeclass"
    as_user: str = "edgeclass"  # releases belong to the service user; "" = the ssh user
    reload_command: str | None = None  # instead of systemctl: a shell command that makes the service load current
    state_file: str = "/run/edgeclass/state.json"
    timeout: float = 60.0  # seconds to wait for a healthy report
    poll: float = 1.0

    @property
    def quoted_service(self) -> str:
        return shlex.quote(self.service)

    def systemctl(self, verb: str) -> str:
        """``sudo -n systemctl VERB SERVICE``: ``-n`` so a password prompt fails instead of hanging."""
        return f"sudo -n systemctl {verb} {self.quoted_service}"

    def edgeclass(self, *args: str, as_service_user: bool = False) -> str:
        """The device's ``edgeclass ARGS`` as one shell string, via ``sudo -n -u`` when asked."""
        argv = [self.remote_edgeclass, *args]
        if as_service_user and self.as_user:
            argv = ["sudo", "-n", "-u", self.as_user, *argv]
        return shlex.join(argv)
