"""Run the service commands through the real ``edgeclass`` app, whether or not device/cli.py registers them yet."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A process whose main() is edgeclass's own, with the service commands attached
# (register() is a no-op once device/cli.py does it itself).
_MAIN = ("import sys; from edgeclass.device import cli, service_cli; "
         "service_cli.register(cli.app, cli.bundle_app); sys.argv[0] = 'edgeclass'; cli.main()")


def edgeclass(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``edgeclass ARGS`` in a fresh process (user errors: 'error: ...' and exit 2, as on a Pi)."""
    return subprocess.run([sys.executable, "-c", _MAIN, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, **kwargs.pop("env", {})}, **kwargs)


@pytest.fixture()
def cli_app():
    """edgeclass.device.cli.app with the service commands registered (idempotent)."""
    from edgeclass.device import cli, service_cli

    service_cli.register(cli.app, cli.bundle_app)
    return cli.app
