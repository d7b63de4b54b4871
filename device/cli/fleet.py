"""``edgeclass deploy`` and ``setup-pi``: ship a bundle (or edgeclass itself) from the workstation to a Pi, or say where a Pi stands."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import EdgeclassError
from .app import app


@app.command("deploy")
def deploy(
    bundle: Optional[str] = typer.Argument(None, metavar="BUNDLE", help="Bundle directory to deploy (not with --status)."),
    host: Optional[str] = typer.Argument(None, metavar="HOST", help="\\[user@]host, as you would give it to ssh (aliases from ~/.ssh/config work)."),
    status: bool = typer.Option(False, "--status", help="Only report: which release is current, the unit's state, what the service runs and whether it is healthy (edgeclass deploy --status HOST). Exit 1 when not healthy on current."),
    service: str = typer.Option("edgeclass", "--service", help="systemd service to start or reload."),
    root: str = typer.Option("/var/lib/edgeclass", "--root", help="Releases root on the device."),
    keep: int = typer.Option(3, "--keep", min=1, help="Releases to keep on the device."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (every ssh/scp command) without running it."),
    port: Optional[int] = typer.Option(None, "--port", "-p", min=1, max=65535, help="ssh port."),
    identity: Optional[Path] = typer.Option(None, "--identity", "-i", help="ssh private key."),
    ssh_options: List[str] = typer.Option([], "--ssh-option", "-o", help="Extra ssh option (Key=Value), repeatable."),
    ssh_config: Optional[str] = typer.Option(None, "--ssh-config", "-F", help="ssh config file (default: yours)."),
    remote_edgeclass: str = typer.Option("/opt/edgeclass/venv/bin/edgeclass", "--remote-edgeclass", help="edgeclass on the device."),
    as_user: str = typer.Option("edgeclass", "--as-user", help="Run install/rollback on the device as this user via sudo -n -u; '' = the ssh user."),
    reload_command: Optional[str] = typer.Option(None, "--reload-command", help="Shell command on the device that makes the service load current, instead of systemctl (default: sudo -n systemctl reset-failed SERVICE when the unit is failed, then sudo -n systemctl reload-or-restart SERVICE)."),
    state_file: str = typer.Option("/run/edgeclass/state.json", "--state-file", help="The service's state file on the device."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.0, help="Seconds to wait for the service to report healthy on the new release."),
    verify_accuracy: Optional[Path] = typer.Option(None, "--verify-accuracy", metavar="RUN|DATASET", help="Once healthy, measure the accuracy on the device: on the test split of this training run (or split.json), or on this folder-per-class dataset, next to this machine's on the same photos; recorded on the device under ROOT/verification/."),
    max_images: int = typer.Option(200, "--max-images", min=1, help="With --verify-accuracy: a stratified sample of at most this many photos."),
    max_drop: float = typer.Option(1.0, "--max-drop", help="With --verify-accuracy: accuracy points the device may lose against this machine on the same photos before the deploy rolls back."),
) -> None:
    """Copy a bundle to a Pi over ssh, install it as a new release, start or reload the service, roll back if it is not healthy.

    A first deploy starts an inactive service, and one left failed by a crash
    loop (reset-failed, then start). With --verify-accuracy, the Pi then
    measures the new model's accuracy itself; a drop beyond --max-drop rolls back. With --status, only report where the Pi
    stands: edgeclass deploy --status HOST.
    """
    from ..fleet.deploy import Deployment, DeployOptions, show_status

    if status:
        if host is not None:
            raise EdgeclassError("--status takes only the host: edgeclass deploy --status HOST")
        bundle, host = None, bundle
    if host is None:
        raise EdgeclassError("deploy needs BUNDLE and HOST (edgeclass deploy BUNDLE HOST), "
                             "or --status HOST to only report")
    target = _ssh_target(host, port, identity, ssh_options, ssh_config)
    options = DeployOptions(service=service, root=root, keep=keep, remote_edgeclass=remote_edgeclass, as_user=as_user,
                            reload_command=reload_command, state_file=state_file, timeout=timeout,
                            poll=min(1.0, max(0.2, timeout / 20)))
    if status:
        if show_status(target, options, echo=typer.echo).verdict() is not None:
            raise typer.Exit(code=1)
        return
    from ..fleet.accuracy import AccuracyCheck

    accuracy = None
    if verify_accuracy is not None:
        if not verify_accuracy.exists():
            raise EdgeclassError(f"{verify_accuracy}: no such training run, split.json or dataset folder (--verify-accuracy)")
        accuracy = AccuracyCheck(verify_accuracy, max_images=max_images, max_drop=max_drop)
    Deployment(Path(bundle), target, options, echo=typer.echo, dry_run=dry_run, accuracy=accuracy).run()


@app.command("setup-pi")
def setup_pi(
    host: str = typer.Argument(..., metavar="HOST", help="\\[user@]host, as you would give it to ssh (aliases from ~/.ssh/config work)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every step (the wheel build, each ssh/scp command) without running it."),
    wheel: Optional[Path] = typer.Option(None, "--wheel", help="Install this edgeclass wheel instead of building one from this checkout."),
    venv: str = typer.Option("/opt/edgeclass/venv", "--venv", help="Virtual environment on the device (made with --system-site-packages)."),
    service: str = typer.Option("edgeclass", "--service", help="systemd service to restart after an upgrade (when it runs)."),
    port: Optional[int] = typer.Option(None, "--port", "-p", min=1, max=65535, help="ssh port."),
    identity: Optional[Path] = typer.Option(None, "--identity", "-i", help="ssh private key."),
    ssh_options: List[str] = typer.Option([], "--ssh-option", "-o", help="Extra ssh option (Key=Value), repeatable."),
    ssh_config: Optional[str] = typer.Option(None, "--ssh-config", "-F", help="ssh config file (default: yours)."),
) -> None:
    """Install this workstation's edgeclass on a Pi over ssh, with the systemd service; run again to upgrade.

    Builds a wheel of this edgeclass, copies it over, installs python3-venv
    (and python3-picamera2 where the OS has it) with apt, creates the venv
    with --system-site-packages, pip-installs the wheel with its device
    extra, and runs 'edgeclass service install' there. The ssh user needs
    passwordless sudo (the Raspberry Pi OS default).
    """
    from ..fleet.setup import PiSetup, SetupOptions

    target = _ssh_target(host, port, identity, ssh_options, ssh_config)
    PiSetup(target, SetupOptions(venv=venv, service=service, wheel=wheel), echo=typer.echo, dry_run=dry_run).run()


def _ssh_target(host: str, port: Optional[int], identity: Optional[Path], ssh_options: List[str],
                ssh_config: Optional[str]):
    """The checked ssh destination both commands connect to."""
    from ..fleet.ssh import SshTarget, check_host

    check_host(host)
    if identity is not None and not identity.is_file():
        raise EdgeclassError(f"{identity}: no such ssh key file (--identity)")
    return SshTarget(host, port=port, identity=identity, options=tuple(ssh_options), config=ssh_config)
