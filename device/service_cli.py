"""The service-side commands: ``service install/status``, ``deploy``, ``bundle install/rollback``.

Attached to the ``edgeclass`` app by :func:`register`; each command imports
its module when it runs, so ``edgeclass --help`` stays fast on a Pi.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from .errors import EdgeclassError

service_app = typer.Typer(help="Install the systemd service and check its health.", no_args_is_help=True)


def register(app: typer.Typer, bundle_app: typer.Typer) -> None:
    """Add ``service install/status``, ``deploy`` and ``bundle install/rollback``; calling twice is harmless."""
    if any(group.name == "service" for group in app.registered_groups):
        return
    app.add_typer(service_app, name="service")
    app.command("deploy")(deploy)
    bundle_app.command("install")(bundle_install)
    bundle_app.command("rollback")(bundle_rollback)


@service_app.command("install")
def service_install(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every action without doing it."),
    user: str = typer.Option("edgeclass", "--user", help="Unprivileged user the service runs as (created if missing)."),
    prefix: Path = typer.Option(Path("/"), "--prefix", help="Install under this root instead of / (files only: no user, no systemctl)."),
    exec_path: str = typer.Option("/opt/edgeclass/venv/bin/edgeclass", "--exec", help="The edgeclass the unit runs."),
) -> None:
    """Install the systemd unit, the default config and the service user (safe to run again)."""
    from .service import plan_install, run_plan

    if not exec_path.startswith("/"):
        raise EdgeclassError(f"--exec {exec_path}: must be an absolute path (systemd runs it without a PATH search)")
    if not dry_run and prefix.resolve() == Path("/") and os.geteuid() != 0:
        raise EdgeclassError("service install writes /etc and creates a user: run it with sudo (or add --dry-run to see the plan)")
    run_plan(plan_install(prefix, user, exec_path), dry_run, typer.echo)


@service_app.command("status")
def service_status(
    state_file: Path = typer.Option(Path("/run/edgeclass/state.json"), "--state-file", help="The state file the service writes (\\[service] state_file)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: healthy, problems, age_s, state."),
    max_age: float = typer.Option(15.0, "--max-age", min=0.1, help="Seconds after which a state file counts as stale."),
) -> None:
    """Summarise the service's health from its state file; exit 0 when healthy, 1 when not."""
    from .service import check_health, describe_health
    from .state import StateError, read_state

    try:
        health = check_health(read_state(state_file), max_age=max_age)
    except StateError as exc:
        health = check_health(None, missing=str(exc))
    typer.echo(json.dumps(health.to_json()) if as_json else describe_health(health))
    if not health.healthy:
        raise typer.Exit(code=1)


def bundle_install(
    bundle: Path = typer.Argument(..., help="Bundle directory to install."),
    root: Path = typer.Option(..., "--root", help="Releases root (/var/lib/edgeclass on a Pi)."),
    keep: int = typer.Option(3, "--keep", min=1, help="Releases to keep (2 or more to be able to roll back)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Copy a bundle into ROOT/releases/, verify it there, and switch ROOT/current to it atomically."""
    from .releases import install_bundle

    switch = install_bundle(bundle, root, keep=keep)
    if as_json:
        typer.echo(json.dumps(switch.to_json()))
        return
    typer.echo(f"installed {switch.current.path}")
    typer.echo(f"current -> {switch.current.name}" + (f" (previous: {switch.previous.name})" if switch.previous else ""))
    for path in switch.removed:
        typer.echo(f"removed {path}")


def bundle_rollback(
    root: Path = typer.Option(..., "--root", help="Releases root (/var/lib/edgeclass on a Pi)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Switch ROOT/current back to the release it replaced."""
    from .releases import rollback

    switch = rollback(root)
    if as_json:
        typer.echo(json.dumps(switch.to_json()))
        return
    typer.echo(f"current -> {switch.current.name} (was {switch.previous.name})")


def deploy(
    bundle: Path = typer.Argument(..., help="Bundle directory to deploy."),
    host: str = typer.Argument(..., help="\\[user@]host, as you would give it to ssh (aliases from ~/.ssh/config work)."),
    service: str = typer.Option("edgeclass", "--service", help="systemd service to reload."),
    root: str = typer.Option("/var/lib/edgeclass", "--root", help="Releases root on the device."),
    keep: int = typer.Option(3, "--keep", min=1, help="Releases to keep on the device."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (every ssh/scp command) without running it."),
    port: Optional[int] = typer.Option(None, "--port", "-p", min=1, max=65535, help="ssh port."),
    identity: Optional[Path] = typer.Option(None, "--identity", "-i", help="ssh private key."),
    ssh_options: List[str] = typer.Option([], "--ssh-option", "-o", help="Extra ssh option (Key=Value), repeatable."),
    ssh_config: Optional[str] = typer.Option(None, "--ssh-config", "-F", help="ssh config file (default: yours)."),
    remote_edgeclass: str = typer.Option("/opt/edgeclass/venv/bin/edgeclass", "--remote-edgeclass", help="edgeclass on the device."),
    as_user: str = typer.Option("edgeclass", "--as-user", help="Run install/rollback on the device as this user via sudo -n -u; '' = the ssh user."),
    reload_command: Optional[str] = typer.Option(None, "--reload-command", help="Shell command on the device that reloads the service (default: sudo -n systemctl reload SERVICE)."),
    state_file: str = typer.Option("/run/edgeclass/state.json", "--state-file", help="The service's state file on the device."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.0, help="Seconds to wait for the service to report healthy on the new release."),
) -> None:
    """Copy a bundle to a Pi over ssh, install it as a new release, reload, and roll back if it is not healthy."""
    from .deploy import DeployOptions, Deployment, SshTarget

    if identity is not None and not identity.is_file():
        raise EdgeclassError(f"{identity}: no such ssh key file (--identity)")
    target = SshTarget(host, port=port, identity=identity, options=tuple(ssh_options), config=ssh_config)
    options = DeployOptions(service=service, root=root, keep=keep, remote_edgeclass=remote_edgeclass, as_user=as_user,
                            reload_command=reload_command, state_file=state_file, timeout=timeout,
                            poll=min(1.0, max(0.2, timeout / 20)))
    Deployment(bundle, target, options, echo=typer.echo, dry_run=dry_run).run()
