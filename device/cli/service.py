"""``edgeclass service install|status``: the systemd unit on a Pi, and its health."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from ..errors import EdgeclassError
from .app import service_app


@service_app.command("install")
def service_install(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every action without doing it."),
    user: str = typer.Option("edgeclass", "--user", help="Unprivileged user the service runs as (created if missing)."),
    prefix: Path = typer.Option(Path("/"), "--prefix", help="Install under this root instead of / (files only: no user, no systemctl)."),
    exec_path: str = typer.Option("/opt/edgeclass/venv/bin/edgeclass", "--exec", help="The edgeclass the unit runs."),
    operator: Optional[str] = typer.Option(None, "--operator", help="Login user added to the service's group, to read saved uncertain frames and results without sudo (default: the user who ran sudo; '' = nobody)."),
) -> None:
    """Install the systemd unit, the default config and the service user (safe to run again)."""
    from ..service.install import default_operator, plan_install, run_plan

    if not exec_path.startswith("/"):
        raise EdgeclassError(f"--exec {exec_path}: must be an absolute path (systemd runs it without a PATH search)")
    if not dry_run and prefix.resolve() == Path("/") and os.geteuid() != 0:
        raise EdgeclassError("service install writes /etc and creates a user: run it with sudo (or add --dry-run to see the plan)")
    who = default_operator() if operator is None else (operator or None)
    run_plan(plan_install(prefix, user, exec_path, who), dry_run, typer.echo)


@service_app.command("status")
def service_status(
    state_file: Path = typer.Option(Path("/run/edgeclass/state.json"), "--state-file", help="The state file the service writes (\\[service] state_file)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: healthy, problems, age_s, state."),
    max_age: float = typer.Option(15.0, "--max-age", min=0.1, help="Seconds after which a state file counts as stale."),
) -> None:
    """Summarise the service's health from its state file; exit 0 when healthy, 1 when not."""
    from ..service.health import check_health, describe_health
    from ..service.state import StateError, read_state

    try:
        health = check_health(read_state(state_file), max_age=max_age)
    except StateError as exc:
        health = check_health(None, missing=str(exc))
    typer.echo(json.dumps(health.to_json()) if as_json else describe_health(health))
    if not health.healthy:
        raise typer.Exit(code=1)
