"""The ``edgeclass`` typer app and its groups, and logging set-up: what every command module attaches to."""

from __future__ import annotations

import logging
import sys

import typer

from .. import __version__
from ..errors import printable

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


class PrintableFormatter(logging.Formatter):
    """Log lines without terminal control codes: messages quote a bundle's name and labels."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # a traceback, appended after, keeps its newlines
        return printable(super().formatMessage(record))


def setup_logging(level: int = logging.INFO) -> None:
    """Plain one-line logs on stderr (journald adds its own timestamps under systemd)."""
    root = logging.getLogger()
    if not any(getattr(h, "_edgeclass", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
        handler._edgeclass = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
