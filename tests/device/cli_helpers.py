"""Run ``edgeclass`` commands in a fresh process, or get its typer app in this one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A process whose main() is edgeclass's own console entry point.
_MAIN = "import sys; from edgeclass.device.cli import main; sys.argv[0] = 'edgeclass'; main()"


def edgeclass(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``edgeclass ARGS`` in a fresh process (user errors: 'error: ...' and exit 2, as on a Pi)."""
    return subprocess.run([sys.executable, "-c", _MAIN, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, **kwargs.pop("env", {})}, **kwargs)


@pytest.fixture()
def cli_app():
    """The ``edgeclass`` typer app, every command attached."""
    from edgeclass.device.cli import app

    return app
