"""The ``edgeclass`` command: commands only, each in the module of its room.

Device commands (``predict``, ``run``, ``collect``, ``bench``, ``bundle``,
``service``, ``deploy``) import only ``edgeclass.device``, and import their modules inside
the command, so ``edgeclass --help`` stays fast on a Pi. The workstation
commands (``train``, ``evaluate``, ``convert``, ``demo``) are attached from
``edgeclass.train.cli``, ``edgeclass.convert.cli`` and
``edgeclass.workflow.demo``, whose module level imports nothing heavy:
TensorFlow loads inside those commands only, so a Pi without TensorFlow still
gets a working ``edgeclass`` with a clear message if someone runs
``edgeclass train`` there.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import typer

from ..errors import EdgeclassError
from . import bundle, collect, device, fleet, service  # noqa: F401  (each attaches its commands to the app)
from .app import app, bundle_app, service_app
from .logs import ERROR, WARNING, connected_to_journal, error_line, prefixed, setup_logging

__all__ = ["app", "bundle_app", "service_app", "main", "setup_logging"]


def _attach_workstation_commands() -> None:
    """Attach train/evaluate/convert/demo when those packages are installed."""
    for module_name in ("edgeclass.train.cli", "edgeclass.convert.cli", "edgeclass.workflow.demo"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(app)


_attach_workstation_commands()
app.add_typer(bundle_app, name="bundle")
app.add_typer(service_app, name="service")


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit.

    Under systemd these lines carry the journal's priority prefix (``<3>``),
    like the log records (:mod:`.logs`), so ``journalctl -p err`` shows them.
    """
    try:
        app()
    except EdgeclassError as exc:
        typer.echo(error_line(f"error: {exc}"), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo(error_line("interrupted", WARNING), err=True)
        sys.exit(130)
    except Exception:
        if not connected_to_journal():
            raise  # a bug: the traceback, as Python prints it
        # The same traceback, every line at error priority (journald files each line on its own).
        typer.echo(prefixed(traceback.format_exc().rstrip("\n"), ERROR, journal=True), err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
