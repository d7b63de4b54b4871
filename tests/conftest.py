"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGECLASS_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, the real models, images and datasets; skip when this machine lacks it."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"{data} not present: real Coral models/flowers dataset are only on the development machines")
    return data


def run_edgeclass(*args: str, timeout: float = 120, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed ``edgeclass`` command in a fresh process, capturing text output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgeclass.device.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL, **kwargs,
    )
