"""The ``edgeclass`` typer app and its groups: what every command module attaches to (logging: :mod:`.logs`)."""

from __future__ import annotations

import logging

import typer

from .. import __version__
from .logs import setup_logging

app = typer.Typer(
    name="edgeclass",
    help="Train an image classifier, convert it to int8 TFLite, and run it live on a Raspberry Pi.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bundle_app = typer.Typer(help="Make and inspect model bundles (model.tflite + labels + bundle.json).", no_args_is_help=True)
service_app = typer.Typer(help="Install the systemd service and check its health.", no_args_is_help=True)

log = logging.getLogger("edgeclass")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeclass {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    setup_logging(logging.DEBUG if verbose else logging.INFO)
